// name: circuit_matches
// params: model_a (string), model_b (string), task (string), level (string: node, edge), method (string: the circuits' method), match_method (string: the MATCHES method, e.g. activation)
// returns: component, rank_a, match, rank_b, score, excess, mutual
// Cross-model reuse: the members of model_a's circuit for the task whose best match (MATCHES rank 0 by match_method) is a member of model_b's circuit for the same task, with both circuit ranks and the match's score; by rank_a.
MATCH (ca:Circuit {model: $model_a, task: $task, level: $level, method: $method})-[ia:INCLUDES]->(a:Component)
MATCH (a)-[m:MATCHES {method: $match_method, rank: 0}]->(b:Component {model: $model_b})
MATCH (cb:Circuit {model: $model_b, task: $task, level: $level, method: $method})-[ib:INCLUDES]->(b)
RETURN a.uid AS component, ia.rank AS rank_a, b.uid AS match, ib.rank AS rank_b, m.score AS score,
       m.excess AS excess, m.mutual AS mutual
ORDER BY rank_a, component
