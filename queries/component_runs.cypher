// name: component_runs
// params: uid (string: a component's uid)
// returns: run, stage, scope, status, stage_version, wrote
// The provenance of one component: every run that set its properties (its run_<stage> properties) or wrote one of its relationships (their run), with what it wrote there: 'properties' and/or the relationship types, in name order.
MATCH (c:Component {uid: $uid})
OPTIONAL MATCH (c)-[e]-()
WITH c, collect(DISTINCT [e.run, type(e)]) AS edge_writes
WITH edge_writes + [k IN keys(c) WHERE k STARTS WITH 'run_' | [c[k], 'properties']] AS writes
UNWIND writes AS w
MATCH (r:Run {uid: w[0]})
WITH r, w[1] AS what
ORDER BY what
RETURN r.uid AS run, r.stage AS stage, r.scope AS scope, r.status AS status, r.stage_version AS stage_version,
       collect(DISTINCT what) AS wrote
ORDER BY run
