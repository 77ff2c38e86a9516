package kernels

import "unsafe"

func unsafeSizeof[F Float](v F) uintptr { return unsafe.Sizeof(v) }
