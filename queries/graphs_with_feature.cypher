// name: graphs_with_feature
// params: uid (string: a component uid, e.g. a feature's)
// returns: graph, slug, prompt, positions, influence, activation
// The imported attribution graphs that contain a component (compgraph import-graph): each graph once, with the prompt positions it appears at (in order), its best (lowest) influence there (circuit-tracer's cumulative influence: lower = more important) and its largest activation. Ordered by influence, then graph.
MATCH (g:AttributionGraph)-[c:CONTAINS]->(x:Component {uid: $uid})
WITH g, c ORDER BY c.pos
WITH g, collect(c.pos) AS positions, min(c.influence) AS influence, max(c.activation) AS activation
RETURN g.uid AS graph, g.slug AS slug, g.prompt AS prompt, positions, influence, activation
ORDER BY influence, graph
