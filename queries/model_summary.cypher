// name: model_summary
// params: model (string)
// returns: kind, count
// How many components of each kind a model has in the store.
MATCH (c:Component {model: $model})
UNWIND [l IN labels(c) WHERE l <> 'Component'] AS kind
RETURN kind, count(*) AS count
ORDER BY kind
