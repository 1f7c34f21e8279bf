// name: component_decoding
// params: uid (string: a component's uid)
// returns: via, rank, sign, logit, token, token_id
// What any component decodes to through the LM head (DECODES_TO), for every via (out, in, gate): the top-k tokens (rank 0 = largest logit, sign +1) then the bottom-k (rank -1 = smallest, sign -1).
MATCH (c:Component {uid: $uid})-[d:DECODES_TO]->(t:Token)
RETURN d.via AS via, d.rank AS rank, d.sign AS sign, d.logit AS logit, t.text AS token, t.id AS token_id
ORDER BY via, sign DESC, abs(rank)
