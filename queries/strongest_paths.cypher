// name: strongest_paths
// params: src (string), dst (string: component uids), min_weight (float: every hop needs |weight| >= it; 0 keeps all), limit (int)
// returns: path, kinds, weights, hops, strength
// The strongest weights-based paths (CONNECTS) from one component to another, of 1 to 3 hops: Cypher takes no parameter as a path-length bound, so the bound is fixed here (copy the file for longer paths; each hop multiplies the work).
// strength = the product of |weight| along the path (signal through successive linear maps multiplies; composition scores lie in [0, 1], so longer paths weigh less); path lists the uids from src to dst, kinds and weights each hop's CONNECTS.kind and signed weight. Parallel CONNECTS (q/k/v composition of one head pair) make distinct paths.
// Cost: every path of up to 3 hops leaving src is expanded, so raise min_weight on dense layers (all head pairs are connected by composition scores).
MATCH p = (a:Component {uid: $src})-[:CONNECTS*1..3]->(b:Component {uid: $dst})
WHERE all(r IN relationships(p) WHERE abs(r.weight) >= $min_weight)
WITH p, reduce(s = 1.0, r IN relationships(p) | s * abs(r.weight)) AS strength
RETURN [n IN nodes(p) | n.uid] AS path, [r IN relationships(p) | r.kind] AS kinds,
       [r IN relationships(p) | r.weight] AS weights, length(p) AS hops, strength
ORDER BY strength DESC, hops
LIMIT $limit
