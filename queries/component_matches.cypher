// name: component_matches
// params: uid (string: a component's uid)
// returns: model, match, kind, layer, index, method, rank, score, excess, mutual
// A component's counterparts in other models (MATCHES written by `compgraph match`): each match with the other model, its kind, layer and index, the method, rank (0 = best), score, excess over the random-rotation baseline and whether the two are each other's best; by model, method, rank.
MATCH (c:Component {uid: $uid})-[m:MATCHES]->(x:Component)
RETURN x.model AS model, x.uid AS match, toLower([l IN labels(x) WHERE l <> 'Component'][0]) AS kind,
       x.layer AS layer, coalesce(x.index, x.head, x.expert, x.kv_head) AS index, m.method AS method,
       m.rank AS rank, m.score AS score, m.excess AS excess, m.mutual AS mutual
ORDER BY model, method, rank, match
