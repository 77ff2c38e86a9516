package train

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/hostmem"
)

// Init makes initial weights from its own seeded random source, so that a program that
// makes its weights in a fixed order gets the same weights on every run (Gorgonia's
// G.GlorotN, G.HeN and friends draw from the global source). Each method returns a new
// tensor for G.WithValue:
//
//	in := train.NewInit(seed)
//	w, err := in.HeNormal(tensor.Float32, math.Sqrt2, 784, 128)
//	wn := G.NewMatrix(g, tensor.Float32, G.WithShape(784, 128), G.WithName("proj.w"), G.WithValue(w))
//
// Values are drawn in float64 in element order and rounded to the dtype (float32, float64
// or bfloat16), so one seed gives the same numbers, up to rounding, in every dtype. The
// fan-in of a shape is its second-to-last dimension (the rows of a weight W in x·W; for
// expert weights [E,H,F], H) and its only dimension for a vector; the fan-out is its last.
//
// An Init is not safe for concurrent use.
type Init struct {
	rng *rand.Rand
}

// NewInit returns an Init drawing from math/rand/v2's PCG seeded with (seed, 1).
func NewInit(seed uint64) *Init { return &Init{rng: rand.New(rand.NewPCG(seed, 1))} }

// NewInitFrom returns an Init drawing from rng (which it advances).
func NewInitFrom(rng *rand.Rand) (*Init, error) {
	if rng == nil {
		return nil, fmt.Errorf("gomoe: train: NewInitFrom: nil source")
	}
	return &Init{rng: rng}, nil
}

// Normal returns a tensor of N(0, std²) draws (zeros when std is 0, with no draw).
func (in *Init) Normal(dt tensor.Dtype, std float64, shape ...int) (*tensor.Dense, error) {
	return in.normal("Normal", dt, std, shape)
}

// normal is Normal for the method name, whose errors it names.
func (in *Init) normal(name string, dt tensor.Dtype, std float64, shape []int) (*tensor.Dense, error) {
	if !(std >= 0) || math.IsInf(std, 0) {
		return nil, fmt.Errorf("gomoe: train: Init.%s: std %v, want a finite value >= 0", name, std)
	}
	return in.fill(name, dt, shape, func() float64 {
		if std == 0 {
			return 0
		}
		return in.rng.NormFloat64() * std
	})
}

// Uniform returns a tensor of draws from U[lo, hi).
func (in *Init) Uniform(dt tensor.Dtype, lo, hi float64, shape ...int) (*tensor.Dense, error) {
	return in.uniform("Uniform", dt, lo, hi, shape)
}

// uniform is Uniform for the method name, whose errors it names.
func (in *Init) uniform(name string, dt tensor.Dtype, lo, hi float64, shape []int) (*tensor.Dense, error) {
	if !(lo <= hi) || math.IsInf(lo, 0) || math.IsInf(hi, 0) {
		return nil, fmt.Errorf("gomoe: train: Init.%s: range [%v, %v)", name, lo, hi)
	}
	if math.IsInf(hi-lo, 0) { // a range wider than float64 holds: the same draws, rounded apart
		return in.fill(name, dt, shape, func() float64 { u := in.rng.Float64(); return lo*(1-u) + hi*u })
	}
	return in.fill(name, dt, shape, func() float64 { return lo + (hi-lo)*in.rng.Float64() })
}

// HeNormal returns N(0, std²) draws with std = gain/√fanIn (He et al.; gain √2 for ReLU).
func (in *Init) HeNormal(dt tensor.Dtype, gain float64, shape ...int) (*tensor.Dense, error) {
	fi, _, err := fans("HeNormal", gain, shape)
	if err != nil {
		return nil, err
	}
	return in.normal("HeNormal", dt, gain/math.Sqrt(float64(fi)), shape)
}

// GlorotUniform returns U[−a, a) draws with a = gain·√(6/(fanIn+fanOut)) (Glorot & Bengio).
func (in *Init) GlorotUniform(dt tensor.Dtype, gain float64, shape ...int) (*tensor.Dense, error) {
	fi, fo, err := fans("GlorotUniform", gain, shape)
	if err != nil {
		return nil, err
	}
	a := gain * math.Sqrt(6/float64(fi+fo))
	return in.uniform("GlorotUniform", dt, -a, a, shape)
}

// fans returns the fan-in and fan-out of a weight of shape for the initialiser name, after
// checking its gain.
func fans(name string, gain float64, shape []int) (in, out int, err error) {
	if !(gain >= 0) || math.IsInf(gain, 0) {
		return 0, 0, fmt.Errorf("gomoe: train: Init.%s: gain %v, want a finite value >= 0", name, gain)
	}
	switch len(shape) {
	case 0:
		return 0, 0, fmt.Errorf("gomoe: train: Init.%s: no shape", name)
	case 1:
		in, out = shape[0], shape[0]
	default:
		in, out = shape[len(shape)-2], shape[len(shape)-1]
	}
	if in < 1 || out < 1 {
		return 0, 0, fmt.Errorf("gomoe: train: Init.%s: shape %v has no fan-in", name, shape)
	}
	return in, out, nil
}

// fill makes a tensor of dtype dt and shape from draw, in element order. A draw that is, or
// rounds to, ±Inf in dt (a std or range beyond what dt holds) is an error, and so are a nil
// or zero *Init, which has no source to draw from, and a tensor larger than the memory this
// process may use.
func (in *Init) fill(name string, dt tensor.Dtype, shape []int, draw func() float64) (*tensor.Dense, error) {
	if in == nil || in.rng == nil {
		return nil, fmt.Errorf("gomoe: train: Init.%s on a nil or zero *Init (make it with NewInit or NewInitFrom)", name)
	}
	if len(shape) == 0 {
		return nil, fmt.Errorf("gomoe: train: Init.%s: no shape (a scalar weight is a vector of 1)", name)
	}
	switch dt {
	case tensor.Float64, tensor.Float32, bfloat16.Dtype:
	case tensor.Dtype{}: // dt.Size below would dereference its nil reflect.Type
		return nil, fmt.Errorf("gomoe: train: Init.%s: the zero dtype, want float32, float64 or bfloat16", name)
	default:
		return nil, fmt.Errorf("gomoe: train: Init.%s: dtype %v, want float32, float64 or bfloat16", name, dt)
	}
	n := 1
	for _, s := range shape {
		if s < 1 {
			return nil, fmt.Errorf("gomoe: train: Init.%s: shape %v has a dimension below 1", name, shape)
		}
		if n > math.MaxInt32/s {
			return nil, fmt.Errorf("gomoe: train: Init.%s: shape %v has more than %d elements", name, shape, math.MaxInt32)
		}
		n *= s
	}
	// A Go allocation that fails ends the process: refuse what cannot fit first.
	if err := hostmem.Check(fmt.Sprintf("gomoe: train: Init.%s: %d elements of %v", name, n, dt), float64(n)*float64(dt.Size())); err != nil {
		return nil, err
	}
	var back any
	bad := -1 // the first element that is not finite in dt
	var badDraw float64
	check := func(i int, d, rounded float64) {
		if bad < 0 && math.IsInf(rounded, 0) {
			bad, badDraw = i, d
		}
	}
	switch dt {
	case tensor.Float64:
		v := make([]float64, n)
		for i := range v {
			v[i] = draw()
			check(i, v[i], v[i])
		}
		back = v
	case tensor.Float32:
		v := make([]float32, n)
		for i := range v {
			d := draw()
			v[i] = float32(d)
			check(i, d, float64(v[i]))
		}
		back = v
	case bfloat16.Dtype:
		v := make([]bfloat16.BFloat16, n)
		for i := range v {
			d := draw()
			v[i] = bfloat16.FromFloat64(d)
			check(i, d, float64(v[i].Float32()))
		}
		back = v
	default:
		return nil, fmt.Errorf("gomoe: train: Init.%s: dtype %v, want float32, float64 or bfloat16", name, dt)
	}
	if bad >= 0 {
		return nil, fmt.Errorf("gomoe: train: Init.%s: element %d draws %g, beyond what %v holds", name, bad, badDraw, dt)
	}
	return tensor.New(tensor.WithShape(append([]int(nil), shape...)...), tensor.WithBacking(back)), nil
}
