// name: component_reuse
// params: model (string), level (string: node, edge), method (string)
// returns: component, kind, layer, index, n_tasks, tasks
// How many tasks' circuits each component belongs to (one circuit per task at a given level and method), with the tasks in name order; most reused first.
MATCH (c:Circuit {model: $model, level: $level, method: $method})-[:INCLUDES]->(x:Component)
WITH x, c.task AS task
ORDER BY task
WITH x, collect(DISTINCT task) AS tasks
RETURN x.uid AS component, toLower([l IN labels(x) WHERE l <> 'Component'][0]) AS kind, x.layer AS layer,
       coalesce(x.index, x.head, x.expert, x.kv_head) AS index, size(tasks) AS n_tasks, tasks
ORDER BY n_tasks DESC, component
