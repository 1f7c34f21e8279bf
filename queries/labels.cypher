// name: label_counts
// params: (none)
// returns: label, count
// Nodes per label.
MATCH (n) UNWIND labels(n) AS label
RETURN label, count(*) AS count
ORDER BY label
