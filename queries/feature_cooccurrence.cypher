// name: feature_cooccurrence
// params: model (string), min_graphs (int)
// returns: a, b, graphs
// Pairs of transcoder features that occur in the same imported attribution graphs of a model, and in how many (each pair once, a < b by uid; pairs in at least min_graphs graphs): a weighted graph whose communities are supernode candidates (compgraph analyse modularity --graphs COOCCURS). Read from the COOCCURS edges every import-graph rewrites: only pairs in at least its --cooccur-min graphs (default 10) are stored, so a smaller min_graphs gives those alone; KB.cooccurrence_tables counts any floor from the graphs.
MATCH (x:Feature {model: $model})-[r:COOCCURS]->(y:Feature)
WHERE r.graphs >= $min_graphs
RETURN x.uid AS a, y.uid AS b, r.graphs AS graphs
ORDER BY graphs DESC, a, b
