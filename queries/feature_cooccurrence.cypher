// name: feature_cooccurrence
// params: model (string), min_graphs (int)
// returns: a, b, graphs
// Pairs of transcoder features that occur in the same imported attribution graphs of a model, and in how many (each pair once, a.uid < b.uid; pairs in at least min_graphs graphs): a weighted graph whose communities are supernode candidates (compgraph analyse modularity --graphs COOCCURS). Only features in at least min_graphs graphs can make such a pair, so they are found first and only their pairs are counted.
MATCH (g:AttributionGraph {model: $model})-[:CONTAINS]->(f:Feature)
WITH f, count(DISTINCT g) AS held WHERE held >= $min_graphs
WITH collect(f.uid) AS frequent
MATCH (g:AttributionGraph {model: $model})-[:CONTAINS]->(a:Feature)
WHERE a.uid IN frequent
MATCH (g)-[:CONTAINS]->(b:Feature)
WHERE a.uid < b.uid AND b.uid IN frequent
WITH a, b, count(DISTINCT g) AS graphs
WHERE graphs >= $min_graphs
RETURN a.uid AS a, b.uid AS b, graphs
ORDER BY graphs DESC, a, b
