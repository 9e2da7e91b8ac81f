// Load the bundled model, attribute RelP on a bundled task, take the top-k neurons and measure their faithfulness.
using NeuronTrace;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;

int k = args.Length > 0 ? int.Parse(args[0]) : 20;
using var model = TracedModel.Open();                                  // stories260K on the CPU
var (train, eval) = TracedModel.Split(model.LoadTask("pronoun_gender")); // the split `trace` uses
var top = model.Attribute(train, AttributionMethod.RelP, [NodeSite.MlpAct]).Top(NodeSite.MlpAct, k);
var circuit = model.Evaluate(eval, top.Select(t => t.Node).ToList());
foreach (var (node, score) in top) Console.WriteLine($"{node} {score:R}");
Console.WriteLine($"faithfulness {circuit.Faithfulness:R} completeness {circuit.Completeness:R}");
