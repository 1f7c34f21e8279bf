// name: neuron_tokens
// params: model (string), limit (int), k (int: tokens shown per neuron)
// returns: neuron, layer, index, max_logit, tokens
// The neurons whose output weights decode to a single token most strongly, with their top-k tokens.
MATCH (n:Neuron {model: $model})-[d:DECODES_TO {via: 'out', rank: 0}]->(:Token)
WITH n, d.logit AS max_logit
ORDER BY max_logit DESC
LIMIT $limit
MATCH (n)-[d:DECODES_TO {via: 'out'}]->(t:Token)
WHERE d.rank >= 0 AND d.rank < $k
WITH n, max_logit, d.rank AS rank, t.text AS token
ORDER BY max_logit DESC, rank
RETURN n.uid AS neuron, n.layer AS layer, n.index AS index, max_logit, collect(token) AS tokens
ORDER BY max_logit DESC
