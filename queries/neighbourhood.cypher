// name: neighbourhood
// params: uid (string: a component's uid)
// returns: direction, rel, other, other_label, props
// Every relationship of one component, of every type, in and out, with the node at the other end (its uid and its label other than Component: Token, Task, Circuit, Head, Neuron, ...) and the relationship's properties (run included).
MATCH (c:Component {uid: $uid})
CALL {
  WITH c
  MATCH (c)-[r]->(o)
  RETURN 'out' AS direction, r, o
  UNION ALL
  WITH c
  MATCH (c)<-[r]-(o)
  RETURN 'in' AS direction, r, o
}
RETURN direction, type(r) AS rel, o.uid AS other, [l IN labels(o) WHERE l <> 'Component'][0] AS other_label,
       properties(r) AS props
ORDER BY direction DESC, rel, other
