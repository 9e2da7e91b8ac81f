using NeuronTrace.Runtime.Cuda.Native;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>A failed CUDA driver or cuBLAS call: names the call and the error (name and description).</summary>
internal sealed class CudaException : Exception
{
    public CudaException(string call, int code, string errorName, string description)
        : base($"{call} failed: {errorName} ({description})")
    {
        Call = call;
        Code = code;
        ErrorName = errorName;
    }

    public string Call { get; }
    public int Code { get; }
    public string ErrorName { get; }

    /// <summary>Throws unless <paramref name="result"/> is CUDA_SUCCESS.</summary>
    internal static void Check(int result, string call)
    {
        if (result != CudaDriver.Success) throw FromDriver(result, call);
    }

    internal static void CheckCublas(int status, string call)
    {
        if (status != 0) throw new CudaException(call, status, Cublas.StatusName(status), "cuBLAS error");
    }

    internal static unsafe CudaException FromDriver(int result, string call)
    {
        string name = $"CUresult {result}", text = "no description";
        try
        {
            byte* p = null;
            if (CudaDriver.cuGetErrorName(result, &p) == CudaDriver.Success && p != null)
                name = new string((sbyte*)p);
            p = null;
            if (CudaDriver.cuGetErrorString(result, &p) == CudaDriver.Success && p != null)
                text = new string((sbyte*)p);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // the code alone then
        }
        return new CudaException(call, result, name, text);
    }
}
