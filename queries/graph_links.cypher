// name: graph_links
// params: graph (string: an :AttributionGraph uid)
// returns: src, dst, source_pos, target_pos, input, weight
// Every link of one imported attribution graph (ATTRIBUTES with graph = $graph, found through the index on ATTRIBUTES.graph: the ends are matched unlabelled, as a label in the pattern or the same WHERE keeps ArcadeDB off the index): from src at source_pos to dst at target_pos. KB.graph_paths searches them for the strongest paths from the embeddings to the target logit (compgraph.data.attribution_paths).
MATCH (a)-[r:ATTRIBUTES]->(b)
WHERE r.graph = $graph
WITH a, r, b
RETURN a.uid AS src, b.uid AS dst, r.source_pos AS source_pos, r.target_pos AS target_pos, r.input AS input,
       r.weight AS weight
ORDER BY src, source_pos, dst, target_pos, input
