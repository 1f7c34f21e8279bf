// name: runs
// params: model (string)
// returns: run, stage, scope, stage_version, status, superseded_by, config, inputs, code_version, started_at, finished_at, seconds, compute_seconds, write_seconds, rows_written
// The runs that computed a model's data, newest first, with their provenance: the stage and its version, its configuration (JSON), the digests of its inputs (JSON: weights, corpus, task file), the code version, timing and rows written. status: running, complete or superseded (by superseded_by). Every edge a run wrote carries its uid in run; every node the uid of the run of each stage that last set its properties in run_<stage>.
MATCH (r:Run {model: $model})
RETURN r.uid AS run, r.stage AS stage, r.scope AS scope, r.stage_version AS stage_version, r.status AS status,
       r.superseded_by AS superseded_by, r.config AS config, r.inputs AS inputs, r.code_version AS code_version,
       r.started_at AS started_at, r.finished_at AS finished_at, r.seconds AS seconds,
       r.compute_seconds AS compute_seconds, r.write_seconds AS write_seconds, r.rows_written AS rows_written
ORDER BY started_at DESC, run
