// name: retrieval_heads
// params: model (string)
// returns: layer, head, retrieval_score, induction_score
// Heads flagged as retrieval heads (retrieval_score > 0.1, Wu et al. 2024).
MATCH (h:Head {model: $model})
WHERE h.retrieval = true
RETURN h.layer AS layer, h.head AS head, h.retrieval_score AS retrieval_score, h.induction_score AS induction_score
ORDER BY retrieval_score DESC
