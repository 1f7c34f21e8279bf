// name: shared_components
// params: model (string), task_a (string), task_b (string: task names), level (string: node, edge), method (string)
// returns: component, kind, layer, index, rank_a, rank_b, score_a, score_b
// The components in the circuits of both tasks (same model, level and method), with their rank and score in each; those ranked highest in both first (by rank_a + rank_b).
MATCH (a:Circuit {model: $model, task: $task_a, level: $level, method: $method})-[ia:INCLUDES]->(x:Component)
MATCH (b:Circuit {model: $model, task: $task_b, level: $level, method: $method})-[ib:INCLUDES]->(x)
RETURN x.uid AS component, toLower([l IN labels(x) WHERE l <> 'Component'][0]) AS kind, x.layer AS layer,
       coalesce(x.index, x.head, x.expert, x.kv_head) AS index, ia.rank AS rank_a, ib.rank AS rank_b,
       ia.score AS score_a, ib.score AS score_b
ORDER BY rank_a + rank_b, rank_a, component
