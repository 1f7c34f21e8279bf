// name: matched_everywhere
// params: method (string: the MATCHES method), min_excess (number: the least excess a match needs)
// returns: component, model, kind, layer, index, models, matches
// Components with a mutual best match (MATCHES rank 0, mutual, excess >= min_excess of the method) in every other model of the store that was matched by the method (models only imported, say from attribution graphs, never matched, do not count): the component, its model, kind, layer and index, how many other models it matches, and those matches; by model, layer, index.
MATCH (o:Model)
WHERE EXISTS { MATCH (:Component {model: o.uid})-[:MATCHES {method: $method}]->() }
WITH count(o) - 1 AS others
MATCH (c:Component)-[m:MATCHES {method: $method, rank: 0, mutual: true}]->(x:Component)
WHERE m.excess >= $min_excess
WITH others, c, x
ORDER BY x.uid
WITH others, c, count(DISTINCT x.model) AS models, collect(x.uid) AS matches
WHERE models = others AND others > 0
RETURN c.uid AS component, c.model AS model, toLower([l IN labels(c) WHERE l <> 'Component'][0]) AS kind,
       c.layer AS layer, coalesce(c.index, c.head, c.expert, c.kv_head) AS index, models, matches
ORDER BY model, layer, index, component
