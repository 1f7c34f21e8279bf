// name: recurring_attributions
// params: model (string), min_graphs (int), limit (int)
// returns: src, dst, src_layer, src_index, dst_layer, dst_index, graphs, links, mean_weight
// Feature -> feature ATTRIBUTES edges that recur across a model's imported attribution graphs: in how many graphs the pair is linked (at any positions), how many links that is, and their mean weight; pairs linked in at least min_graphs graphs (and never fewer than 2: a pair of one graph does not recur), most graphs first, then the largest |mean_weight|. Read from the RECURS edges every import-graph rewrites (compgraph.data.attribution_summary), not from every graph's links.
MATCH (a:Feature {model: $model})-[r:RECURS]->(b:Feature)
WHERE r.graphs >= $min_graphs
RETURN a.uid AS src, b.uid AS dst, a.layer AS src_layer, a.index AS src_index, b.layer AS dst_layer,
       b.index AS dst_index, r.graphs AS graphs, r.links AS links, r.mean_weight AS mean_weight
ORDER BY graphs DESC, abs(mean_weight) DESC, src, dst
LIMIT $limit
