// name: feature_cooccurrence
// params: model (string), min_graphs (int)
// returns: a, b, graphs
// Pairs of transcoder features that occur in the same imported attribution graphs of a model, and in how many (each pair once, a.uid < b.uid; pairs in at least min_graphs graphs): a weighted graph whose communities are supernode candidates (compgraph analyse modularity --graphs COOCCURS).
MATCH (g:AttributionGraph {model: $model})-[:CONTAINS]->(a:Feature)
MATCH (g)-[:CONTAINS]->(b:Feature)
WHERE a.uid < b.uid
WITH a, b, count(DISTINCT g) AS graphs
WHERE graphs >= $min_graphs
RETURN a.uid AS a, b.uid AS b, graphs
ORDER BY graphs DESC, a, b
