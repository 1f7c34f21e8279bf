// name: feature_cooccurrence
// params: model (string), min_graphs (int)
// returns: a, b, graphs
// Pairs of transcoder features that occur in the same imported attribution graphs of a model, and in how many (each pair once, a < b by uid; pairs in at least min_graphs graphs): a weighted graph whose communities are supernode candidates (compgraph analyse modularity --graphs COOCCURS). Only features in at least min_graphs graphs can make such a pair: they are found first, then each graph's pairs among them are counted.
MATCH (g:AttributionGraph {model: $model})-[:CONTAINS]->(f:Feature)
WITH f, collect(DISTINCT g.uid) AS holders
WHERE size(holders) >= $min_graphs
UNWIND holders AS g
WITH g, collect(f.uid) AS held
UNWIND held AS a
UNWIND held AS b
WITH a, b WHERE a < b
WITH a, b, count(*) AS graphs
WHERE graphs >= $min_graphs
RETURN a, b, graphs
ORDER BY graphs DESC, a, b
