// name: feature_prevalence
// params: model (string), limit (int)
// returns: feature, dictionary, layer, index, graphs, mean_influence, mean_activation
// Transcoder features ranked by how many of a model's imported attribution graphs contain them, with their mean influence and mean activation over every position they appear at (a feature seen at two positions of one graph counts once in graphs, twice in the means). Ties: lower mean influence first, then uid. Read from what every import-graph writes on the features (compgraph.data.attribution_summary), not from every graph's nodes.
MATCH (f:Feature {model: $model})
WHERE f.graphs IS NOT NULL
RETURN f.uid AS feature, f.dictionary AS dictionary, f.layer AS layer, f.index AS index, f.graphs AS graphs,
       f.mean_influence AS mean_influence, f.mean_activation AS mean_activation
ORDER BY graphs DESC, mean_influence, feature
LIMIT $limit
