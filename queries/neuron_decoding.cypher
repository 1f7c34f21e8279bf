// name: neuron_decoding
// params: model (string), layer (int), index (int), via (string: out, in, gate)
// returns: rank, sign, logit, token, token_id
// The top-k and bottom-k tokens one neuron decodes to through the LM head.
MATCH (n:Neuron {model: $model, layer: $layer, index: $index})-[d:DECODES_TO {via: $via}]->(t:Token)
RETURN d.rank AS rank, d.sign AS sign, d.logit AS logit, t.text AS token, t.id AS token_id
ORDER BY d.sign DESC, abs(d.rank)
