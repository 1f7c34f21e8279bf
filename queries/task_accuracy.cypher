// name: task_accuracy
// params: model (string)
// returns: task, metric, accuracy, metric_clean, metric_corrupt, n_examples, n_prompts
// How a model does on each task it was evaluated on: clean accuracy (answer logit above the wrong one) and the mean metric on clean and corrupt prompts.
MATCH (m:Model {uid: $model})-[e:EVALUATED_ON]->(t:Task)
RETURN t.name AS task, e.metric AS metric, e.accuracy AS accuracy, e.metric_clean AS metric_clean,
       e.metric_corrupt AS metric_corrupt, e.n_examples AS n_examples, t.n_prompts AS n_prompts
ORDER BY task
