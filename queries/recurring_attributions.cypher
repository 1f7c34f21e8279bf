// name: recurring_attributions
// params: model (string), min_graphs (int), limit (int)
// returns: src, dst, src_layer, src_index, dst_layer, dst_index, graphs, links, mean_weight
// Feature -> feature ATTRIBUTES edges that recur across a model's imported attribution graphs: in how many graphs the pair is linked (at any positions), how many links that is, and their mean weight; pairs linked in at least min_graphs graphs, most graphs first, then the largest |mean_weight|. Only features in at least min_graphs graphs can be such a source, and each source's links are counted apart (memory: one feature's links at a time, not every pair's set of graphs).
MATCH (g:AttributionGraph {model: $model})-[:CONTAINS]->(a:Feature)
WITH a, count(DISTINCT g) AS held
WHERE held >= $min_graphs
CALL {
  WITH a
  MATCH (a)-[r:ATTRIBUTES]->(b:Feature)
  WITH b, count(DISTINCT r.graph) AS graphs, count(r) AS links, avg(r.weight) AS mean_weight
  WHERE graphs >= $min_graphs
  RETURN b, graphs, links, mean_weight
}
RETURN a.uid AS src, b.uid AS dst, a.layer AS src_layer, a.index AS src_index, b.layer AS dst_layer,
       b.index AS dst_index, graphs, links, mean_weight
ORDER BY graphs DESC, abs(mean_weight) DESC, src, dst
LIMIT $limit
