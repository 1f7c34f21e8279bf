// name: graph_paths
// params: graph (string: an :AttributionGraph uid), limit (int)
// returns: path, positions, weights, hops, strength
// The strongest paths of one imported attribution graph from the token embeddings to its target logit: chains of the graph's ATTRIBUTES links of 1 to 4 hops where each link starts at the position the previous one reached, ending at the target token at its position. strength = the product of |weight| along the path; path lists the uids from the embeddings to the token, positions the prompt position at each of them. Cypher takes no parameter as a path-length bound, so 4 is fixed here.
MATCH (g:AttributionGraph {uid: $graph})-[c:CONTAINS {target: true}]->(t:Token)
MATCH p = (e:Site {model: g.model, site: 'embed'})-[:ATTRIBUTES*1..4]->(t)
WITH c, p, relationships(p) AS rs
WHERE all(r IN rs WHERE r.graph = $graph)
  AND all(i IN range(0, size(rs) - 2) WHERE rs[i].target_pos = rs[i + 1].source_pos)
  AND rs[size(rs) - 1].target_pos = c.pos
WITH p, rs, reduce(s = 1.0, r IN rs | s * abs(r.weight)) AS strength
RETURN [n IN nodes(p) | n.uid] AS path, [rs[0].source_pos] + [r IN rs | r.target_pos] AS positions,
       [r IN rs | r.weight] AS weights, size(rs) AS hops, strength
ORDER BY strength DESC, hops, path
LIMIT $limit
