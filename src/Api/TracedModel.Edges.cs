using NeuronTrace.Model;
using NeuronTrace.Tracing.Edges;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace;

// Neuron-to-neuron edges among a circuit's mlp_act nodes and their sweep: what `edges` runs.
public sealed partial class TracedModel
{
    /// <summary>
    /// CLJA edges among <c>mlp_act</c> neurons (docs/method.md 6.2): for every layer pair src &lt; tgt, the RelP Jacobian of
    /// each target neuron with respect to the source layer's neurons with the MLPs in between stopped, as the relative
    /// weight w = J·a_src/(a_tgt + eps) and the flow to the metric F = w·a_tgt·grad_tgt, averaged over the task's examples;
    /// with <see cref="EdgeOptions.EndpointEdges"/> also embedding → neuron and neuron → logit edges.
    /// </summary>
    /// <param name="task">The examples the edges are averaged over (e.g. the evaluation half of <see cref="Split"/>).</param>
    /// <param name="neurons">The neurons to connect (<see cref="EdgeEnd.Neuron"/>, positions from the end).</param>
    /// <param name="options">Target neurons per backward, endpoint edges, RelP rules, metric (default: the evaluation metric).</param>
    /// <param name="progress">Progress per example.</param>
    /// <param name="cancellation">Observed at every progress step.</param>
    /// <exception cref="ArgumentException">No neurons, or a node that is not an mlp_act neuron of this model.</exception>
    public EdgeGraph Edges(PromptTask task, IReadOnlyList<EdgeEnd> neurons, EdgeOptions? options = null,
        IProgress<WorkProgress>? progress = null, CancellationToken cancellation = default)
    {
        cancellation.ThrowIfCancellationRequested();
        return EdgeTracer.Trace(Llama, task, neurons, options ?? new EdgeOptions(), Observed(progress, cancellation));
    }

    /// <summary>
    /// The edge sweep of <c>edges</c>: for each percentage the top edges by |F| are kept, a neuron is kept iff it has a kept
    /// incoming and a kept outgoing edge, and the kept neurons are evaluated as a circuit by mean ablation to the task's
    /// patch-prompt means (the means <see cref="Evaluate"/> and <c>trace</c> use).
    /// </summary>
    /// <param name="graph">The edges (see <see cref="Edges"/>).</param>
    /// <param name="evalTask">Paired evaluation prompts.</param>
    /// <param name="masksPerForward">Ablation masks per batched forward.</param>
    /// <param name="path">Plain forwards, or the shortcut path from each circuit's lowest layer (the default; same numbers to rounding).</param>
    /// <param name="progress">Progress per batch of circuits.</param>
    /// <param name="cancellation">Observed at every progress step.</param>
    /// <exception cref="ArgumentException">The task is unpaired.</exception>
    public IReadOnlyList<EdgeSweepPoint> EvaluateEdges(EdgeGraph graph, PromptTask evalTask, int masksPerForward = 8, SweepPath path = SweepPath.Shortcuts,
        IProgress<WorkProgress>? progress = null, CancellationToken cancellation = default)
    {
        if (!evalTask.IsPaired) throw new ArgumentException("the edge sweep needs paired prompts (its mean ablation uses the patch prompts)");
        cancellation.ThrowIfCancellationRequested();
        var means = TraceJob.AblationMeans(Llama, evalTask, [NodeSite.MlpAct]);
        return EdgeSweep.Run(Llama, graph, evalTask, means, masksPerForward: masksPerForward, progress: Observed(progress, cancellation), path: path);
    }
}
