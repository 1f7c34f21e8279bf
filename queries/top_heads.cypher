// name: top_heads
// params: model (string), score (string: sink_score, prev_token_score, induction_score, duplicate_token_score, entropy, copy_score, retrieval_score), limit (int)
// returns: layer, head, kv_head, score
// The heads of a model with the highest value of one score.
MATCH (h:Head {model: $model})
WHERE h[$score] IS NOT NULL
RETURN h.layer AS layer, h.head AS head, h.kv_head AS kv_head, h[$score] AS score
ORDER BY score DESC, layer, head
LIMIT $limit
