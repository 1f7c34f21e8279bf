// name: circuit_members
// params: model (string), task (string: the task's name), level (string: node, edge), method (string: activation, attribution, eap-ig)
// returns: circuit, component, kind, layer, index, score, rank
// The circuit of a task: its members in rank order (0 = the largest |score|) with the score that selected them.
// kind is the lower-cased component label (neuron, head, expert, feature, site); index is a neuron's or feature's index, a head's head, an expert's expert, a key/value-head site's kv_head, null for other sites.
MATCH (c:Circuit {model: $model, task: $task, level: $level, method: $method})-[i:INCLUDES]->(x:Component)
RETURN c.uid AS circuit, x.uid AS component, toLower([l IN labels(x) WHERE l <> 'Component'][0]) AS kind,
       x.layer AS layer, coalesce(x.index, x.head, x.expert, x.kv_head) AS index, i.score AS score, i.rank AS rank
ORDER BY rank, component
