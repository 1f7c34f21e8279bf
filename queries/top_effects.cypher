// name: top_effects
// params: model (string), task (string: the task's name), method (string: activation, attribution, eap-ig), limit (int)
// returns: component, kind, layer, effect, effect_norm, ablation, via
// The components of a model with the largest |effect| on a task, by one method (via: the --method of
// the effects run that measured it; a component measured by two runs appears once per run).
MATCH (c:Component {model: $model})-[a:AFFECTS {method: $method}]->(t:Task {name: $task})
RETURN c.uid AS component, [l IN labels(c) WHERE l <> 'Component'][0] AS kind, c.layer AS layer,
       a.effect AS effect, a.effect_norm AS effect_norm, a.ablation AS ablation, a.via AS via
ORDER BY abs(a.effect) DESC, component, via
LIMIT $limit
