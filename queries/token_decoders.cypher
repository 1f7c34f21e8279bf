// name: token_decoders
// params: text (string: the token's text, e.g. " Paris"), via (string: out, in, gate), limit (int)
// returns: model, component, kind, layer, index, rank, logit, token_id
// The components of every model whose top-k decoding (rank >= 0) through one via includes a token with this text; largest logit first. Models that share a tokenizer share its :Token nodes. Scans the tokens' text (no index on it).
MATCH (t:Token {text: $text})<-[d:DECODES_TO {via: $via}]-(c:Component)
WHERE d.rank >= 0
RETURN c.model AS model, c.uid AS component, toLower([l IN labels(c) WHERE l <> 'Component'][0]) AS kind,
       c.layer AS layer, coalesce(c.index, c.head, c.expert, c.kv_head) AS index, d.rank AS rank, d.logit AS logit,
       t.id AS token_id
ORDER BY logit DESC, component
LIMIT $limit
