// blockcopy.cuh: the block copies of package ep's staged exchanges (launcher: blockcopy_cuda.go).
// Part of gomoe.cu's translation unit (included after gomoe.cuh, with namespace gomoe in scope);
// built into gomoe.fatbin by build_fatbin.sh.

// ---------------------------------------------------------------------------------------------
// block_copy: n byte copies in one launch, for package ep's staged exchanges (one block per
// (peer, expert)). desc holds n triples of long long (source byte offset from src, destination
// byte offset from dst, bytes); the host splits long blocks into pieces, so a thread block
// takes one piece after another (grid-stride over the triples). A piece whose two addresses
// and length are multiples of 16 (8, 4) moves in 16-byte (8-, 4-byte) words, four in flight
// per thread; any other piece moves byte by byte. Pieces must not overlap: the copies are
// plain bytes, so they arrive bit for bit whatever the element type.

template <typename W>
__device__ __forceinline__ void copyWords(const char *__restrict__ s, char *__restrict__ t, long long nb) {
  const W *__restrict__ sw = reinterpret_cast<const W *>(s);
  W *__restrict__ tw = reinterpret_cast<W *>(t);
  long long nw = nb / (long long)sizeof(W), i = threadIdx.x, step = blockDim.x;
  for (; i + 3 * step < nw; i += 4 * step) {
    W a = sw[i], b = sw[i + step], c = sw[i + 2 * step], d = sw[i + 3 * step];
    tw[i] = a;
    tw[i + step] = b;
    tw[i + 2 * step] = c;
    tw[i + 3 * step] = d;
  }
  for (; i < nw; i += step) tw[i] = sw[i];
}

extern "C" __global__ void __launch_bounds__(256)
block_copy(const char *src, char *dst, const long long *desc, int n) {
  gdcEnter();
  for (int k = blockIdx.x; k < n; k += gridDim.x) {
    const char *s = src + desc[3 * k];
    char *t = dst + desc[3 * k + 1];
    long long nb = desc[3 * k + 2];
    unsigned long long a = (unsigned long long)s | (unsigned long long)t | (unsigned long long)nb;
    if ((a & 15) == 0) {
      copyWords<uint4>(s, t, nb);
    } else if ((a & 7) == 0) {
      copyWords<uint2>(s, t, nb);
    } else if ((a & 3) == 0) {
      copyWords<unsigned int>(s, t, nb);
    } else {
      copyWords<unsigned char>(s, t, nb);
    }
  }
}
