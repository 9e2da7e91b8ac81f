using NeuronTrace.Model;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Sae;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace;

// Sparse-autoencoder bases: what `attribute --sae` and `trace --sae` run.
public sealed partial class TracedModel
{
    /// <summary>
    /// Loads an SAE folder (SAELens <c>cfg.json</c> + <c>sae_weights.safetensors</c>, or Llama Scope) and checks that its hook
    /// point is a site and layer of this model of the SAE's width.
    /// </summary>
    /// <exception cref="ModelFormatException">The folder is not an SAE, or its hook point or width does not fit this model.</exception>
    public SparseAutoencoder LoadSae(string folder) => LoadSae(folder, Config);

    /// <summary><see cref="LoadSae(string)"/> before the model is on a device (the CLI loads its SAEs first, to fail early).</summary>
    internal static SparseAutoencoder LoadSae(string folder, LlamaConfig config)
    {
        var sae = SparseAutoencoder.Load(folder);
        var (site, layer) = sae.HookSite;
        if (layer >= config.Layers)
            throw new ModelFormatException(folder, $"hook point {sae.HookName} is layer {layer} but the model has {config.Layers} layers");
        if (site.Width(config) != sae.DModel)
            throw new ModelFormatException(folder, $"the SAE reads {sae.DModel}-wide vectors but the model's {site.Name()} is {site.Width(config)} wide");
        return sae;
    }

    /// <summary>
    /// Scores an SAE's feature and error nodes at its own hook point (AtP or RelP against the patch prompts): a feature's
    /// score is (f_patch − f_clean)·∂m/∂f, the error node's the gradient times the change of the SAE's reconstruction error,
    /// so features plus error add up to the site's own score at each position.
    /// </summary>
    /// <param name="task">Paired prompts.</param>
    /// <param name="sae">The SAE (see <see cref="LoadSae(string)"/>).</param>
    /// <param name="options">Method (AtP or RelP), metric, RelP rules and batch; its sites are replaced by the SAE's hook site.</param>
    /// <param name="progress">Progress per batch.</param>
    /// <param name="cancellation">Observed at every progress step.</param>
    /// <exception cref="ArgumentException">The task is unpaired, or the method is neither AtP nor RelP.</exception>
    public SaeScores AttributeSae(PromptTask task, SparseAutoencoder sae, AttributionOptions? options = null,
        IProgress<WorkProgress>? progress = null, CancellationToken cancellation = default)
    {
        var (site, layer) = sae.HookSite;
        var o = (options ?? new AttributionOptions()) with { Sites = [site] };
        cancellation.ThrowIfCancellationRequested();
        return SaeAttributor.Score(Llama, task, sae, site, layer, o, Observed(progress, cancellation));
    }

    /// <summary>
    /// The SAE side of <c>trace --sae</c>: each SAE's nodes scored on the trace's training examples by each AtP/RelP method
    /// of the trace, swept over as many log-spaced k as the neuron circuits and evaluated by mean ablation on the same
    /// evaluation examples, so k at the target faithfulness can be compared per basis.
    /// </summary>
    /// <param name="trace">The neuron trace of the same model (see <see cref="Trace"/>).</param>
    /// <param name="saes">The SAEs (see <see cref="LoadSae(string)"/>).</param>
    /// <param name="options">The trace's options.</param>
    /// <param name="cancellation">Observed between SAEs.</param>
    /// <exception cref="ArgumentException">SAEs are given but the trace has no AtP or RelP method.</exception>
    public IReadOnlyList<SaeCircuitSummary> TraceSaes(TraceResult trace, IReadOnlyList<SparseAutoencoder> saes, TraceOptions options,
        CancellationToken cancellation = default)
    {
        var result = new List<SaeCircuitSummary>();
        cancellation.ThrowIfCancellationRequested();
        if (saes.Count == 0) return SaeTrace.Run(Llama, trace, saes, options);
        foreach (var sae in saes)
        {
            result.AddRange(SaeTrace.Run(Llama, trace, [sae], options));
            cancellation.ThrowIfCancellationRequested();
        }
        return result;
    }
}
