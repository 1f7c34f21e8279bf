// name: graph_paths
// params: graph (string: an :AttributionGraph uid), limit (int)
// returns: path, positions, weights, hops, strength
// The strongest paths of one imported attribution graph from the token embeddings to its target logit: chains of the graph's ATTRIBUTES links of 1 to 4 hops where each link starts at the position the previous one reached, ending at the target token at its position. strength = the product of |weight| along the path; path lists the uids from the embeddings to the token, positions the prompt position at each of them. One branch per length, every hop filtered by the graph as it is expanded (the embeddings and shared features carry the links of every graph: a variable-length pattern would walk them all before filtering).
MATCH (g:AttributionGraph {uid: $graph})-[c:CONTAINS {target: true}]->(t:Token)
CALL {
  WITH g, c, t
  MATCH (e:Site {model: g.model, site: 'embed'})-[r1:ATTRIBUTES {graph: $graph}]->(t)
  WHERE r1.target_pos = c.pos
  RETURN [e.uid, t.uid] AS path, [r1.source_pos, r1.target_pos] AS positions, [r1.weight] AS weights, 1 AS hops,
         abs(r1.weight) AS strength
  UNION ALL
  WITH g, c, t
  MATCH (e:Site {model: g.model, site: 'embed'})-[r1:ATTRIBUTES {graph: $graph}]->(a:Component)
        -[r2:ATTRIBUTES {graph: $graph}]->(t)
  WHERE r2.source_pos = r1.target_pos AND r2.target_pos = c.pos
  RETURN [e.uid, a.uid, t.uid] AS path, [r1.source_pos, r1.target_pos, r2.target_pos] AS positions,
         [r1.weight, r2.weight] AS weights, 2 AS hops, abs(r1.weight * r2.weight) AS strength
  UNION ALL
  WITH g, c, t
  MATCH (e:Site {model: g.model, site: 'embed'})-[r1:ATTRIBUTES {graph: $graph}]->(a:Component)
        -[r2:ATTRIBUTES {graph: $graph}]->(b:Component)-[r3:ATTRIBUTES {graph: $graph}]->(t)
  WHERE r2.source_pos = r1.target_pos AND r3.source_pos = r2.target_pos AND r3.target_pos = c.pos
  RETURN [e.uid, a.uid, b.uid, t.uid] AS path, [r1.source_pos, r1.target_pos, r2.target_pos, r3.target_pos] AS positions,
         [r1.weight, r2.weight, r3.weight] AS weights, 3 AS hops, abs(r1.weight * r2.weight * r3.weight) AS strength
  UNION ALL
  WITH g, c, t
  MATCH (e:Site {model: g.model, site: 'embed'})-[r1:ATTRIBUTES {graph: $graph}]->(a:Component)
        -[r2:ATTRIBUTES {graph: $graph}]->(b:Component)-[r3:ATTRIBUTES {graph: $graph}]->(d:Component)
        -[r4:ATTRIBUTES {graph: $graph}]->(t)
  WHERE r2.source_pos = r1.target_pos AND r3.source_pos = r2.target_pos AND r4.source_pos = r3.target_pos
    AND r4.target_pos = c.pos
  RETURN [e.uid, a.uid, b.uid, d.uid, t.uid] AS path,
         [r1.source_pos, r1.target_pos, r2.target_pos, r3.target_pos, r4.target_pos] AS positions,
         [r1.weight, r2.weight, r3.weight, r4.weight] AS weights, 4 AS hops,
         abs(r1.weight * r2.weight * r3.weight * r4.weight) AS strength
}
RETURN path, positions, weights, hops, strength
ORDER BY strength DESC, hops, path
LIMIT $limit
