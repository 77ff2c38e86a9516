package train

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/hostmem"
)

// TestSchedules checks rates worked out by hand: warmup (step+1)/Warmup·Peak, the cosine's
// midpoint (Floor + (1−Floor)/2) and end (Floor), the linear midpoint, and Floor after Total.
func TestSchedules(t *testing.T) {
	cos := Cosine{Peak: 2, Floor: 0.1, Warmup: 4, Total: 15} // decay over steps 4..14
	lin := Linear{Peak: 2, Floor: 0.1, Warmup: 4, Total: 15}
	tests := []struct {
		name string
		s    Schedule
		step int
		want float64
	}{
		{"cos warmup 0", cos, 0, 0.5},
		{"cos warmup 3", cos, 3, 2},
		{"cos peak", cos, 4, 2},
		{"cos middle", cos, 9, 2 * (0.1 + 0.9*0.5)},
		{"cos quarter", Cosine{Peak: 2, Floor: 0.1, Warmup: 4, Total: 13}, 6, 2 * (0.1 + 0.9*0.5*(1+math.Sqrt2/2))},
		{"cos end", cos, 14, 0.2},
		{"cos after", cos, 100, 0.2},
		{"lin warmup 1", lin, 1, 1},
		{"lin peak", lin, 4, 2},
		{"lin middle", lin, 9, 2 * (1 - 0.9*0.5)},
		{"lin end", lin, 14, 0.2},
		{"lin after", lin, 15, 0.2},
		{"no warmup", Cosine{Peak: 1, Floor: 0.1, Total: 11}, 5, 0.1 + 0.9*0.5},
		{"one step", Cosine{Peak: 1, Total: 1}, 0, 1},
		// A decay of one step (Total = Warmup+1) still ends at Floor after Total, as the
		// doc's "step ≥ Total: Peak·Floor" says (it stayed at Peak).
		{"one step, after", Cosine{Peak: 1, Floor: 0.1, Total: 1}, 1, 0.1},
		{"one decay step, after", Cosine{Peak: 2, Floor: 0.1, Warmup: 3, Total: 4}, 4, 0.2},
		{"lin one decay step, after", Linear{Peak: 2, Floor: 0.1, Warmup: 3, Total: 4}, 9, 0.2},
		{"one decay step, at peak", Cosine{Peak: 2, Floor: 0.1, Warmup: 3, Total: 4}, 3, 2},
		{"to zero", Linear{Peak: 3, Total: 4}, 3, 0},
		// A negative step is step 0 (it gave NaN and -Inf without a warmup, a negative rate
		// with one).
		{"cos negative, no warmup", Cosine{Peak: 1, Floor: 0.1, Total: 11}, -1, 1},
		{"cos negative, warmup", cos, -5, 0.5},
		{"lin negative", lin, math.MinInt, 0.5},
		// A Peak near math.MaxFloat64: Peak·(step+1) overflowed, and the warmup's last step
		// (and the ones before it from step 1) gave +Inf.
		{"cos warmup end, Peak 1e308", Cosine{Peak: 1e308, Warmup: 4, Total: 10}, 3, 1e308},
		{"cos warmup middle, Peak 1e308", Cosine{Peak: 1e308, Warmup: 4, Total: 10}, 1, 1e308 / 2},
		{"lin warmup end, Peak MaxFloat64", Linear{Peak: math.MaxFloat64, Warmup: 3, Total: 5}, 2, math.MaxFloat64},
		{"lin peak, Peak MaxFloat64", Linear{Peak: math.MaxFloat64, Warmup: 3, Total: 5}, 3, math.MaxFloat64},
	}
	for _, tt := range tests {
		if got := tt.s.LR(tt.step); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("%s: LR(%d) = %v, want %v", tt.name, tt.step, got, tt.want)
		}
	}
	for s := 5; s < 15; s++ {
		if !(cos.LR(s) < cos.LR(s-1)) || !(lin.LR(s) < lin.LR(s-1)) {
			t.Errorf("step %d: the decay is not decreasing", s)
		}
	}
	// The warmup keeps the bits of Peak·(step+1)/Warmup where that product is finite (the
	// fraction first, Peak·((step+1)/Warmup), differs in a quarter of these).
	for _, peak := range []float64{0.1, 3e-4, 6e-4, 2} {
		for warmup := 1; warmup <= 60; warmup++ {
			for step := 0; step < warmup; step++ {
				want := peak * float64(step+1) / float64(warmup)
				c, l := Cosine{Peak: peak, Warmup: warmup, Total: warmup + 5}, Linear{Peak: peak, Warmup: warmup, Total: warmup + 5}
				if got := c.LR(step); math.Float64bits(got) != math.Float64bits(want) || math.Float64bits(l.LR(step)) != math.Float64bits(want) {
					t.Fatalf("Peak %v, Warmup %d: LR(%d) = %v, %v, want %v bit for bit", peak, warmup, step, got, l.LR(step), want)
				}
			}
		}
	}
}

func TestScheduleValidate(t *testing.T) {
	tests := []struct {
		c    Cosine
		want string
	}{
		{Cosine{Peak: 1, Total: 10}, ""},
		{Cosine{Peak: 0, Total: 10}, "Peak 0"},
		{Cosine{Peak: math.Inf(1), Total: 10}, "Peak +Inf"},
		{Cosine{Peak: 1, Floor: 1.5, Total: 10}, "Floor 1.5"},
		{Cosine{Peak: 1, Floor: math.NaN(), Total: 10}, "Floor NaN"},
		{Cosine{Peak: 1, Warmup: 10, Total: 10}, "Warmup 10 and Total 10"},
		{Cosine{Peak: 1, Warmup: -1, Total: 10}, "Warmup -1"},
	}
	for _, tt := range tests {
		for _, err := range []error{tt.c.Validate(), Linear(tt.c).Validate()} {
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("%+v: %v, want %q", tt.c, err, tt.want)
			}
		}
	}
}

// TestInit: a seed gives the same weights every time and other seeds other weights; Normal
// draws are math/rand/v2's PCG(seed, 1) normals times std, in element order; He and Glorot
// scale by the fans of the shape (sample std and range over 20000 draws); float32 and
// bfloat16 are the float64 draws rounded.
func TestInit(t *testing.T) {
	a, err := NewInit(42).Normal(tensor.Float64, 0.5, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewInit(42).Normal(tensor.Float64, 0.5, 3, 4)
	c, _ := NewInit(43).Normal(tensor.Float64, 0.5, 3, 4)
	ref := rand.New(rand.NewPCG(42, 1))
	for i, x := range a.Float64s() {
		if x != b.Float64s()[i] || x != 0.5*ref.NormFloat64() {
			t.Fatalf("element %d: %v, %v", i, x, b.Float64s()[i])
		}
		if x == c.Float64s()[i] {
			t.Errorf("seeds 42 and 43 agree at %d", i)
		}
	}
	if !a.Shape().Eq(tensor.Shape{3, 4}) {
		t.Errorf("shape %v", a.Shape())
	}
	f32, _ := NewInit(42).Normal(tensor.Float32, 0.5, 12)
	bf, _ := NewInit(42).Normal(bfloat16.Dtype, 0.5, 12)
	for i, x := range a.Float64s() {
		if f32.Float32s()[i] != float32(x) || bf.Data().([]bfloat16.BFloat16)[i] != bfloat16.FromFloat64(x) {
			t.Errorf("element %d: float32 %v, bfloat16 %v of %v", i, f32.Float32s()[i], bf.Data().([]bfloat16.BFloat16)[i], x)
		}
	}

	in := NewInit(1)
	he, err := in.HeNormal(tensor.Float64, math.Sqrt2, 4, 50, 400) // fan-in 50
	if err != nil {
		t.Fatal(err)
	}
	if sd := stddev(he.Float64s()); math.Abs(sd-math.Sqrt(2.0/50)) > 0.02*math.Sqrt(2.0/50) {
		t.Errorf("HeNormal std %v, want %v", sd, math.Sqrt(2.0/50))
	}
	gl, _ := in.GlorotUniform(tensor.Float64, 1, 100, 200)
	lim := math.Sqrt(6.0 / 300)
	lo, hi := 0.0, 0.0
	for _, x := range gl.Float64s() {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	if lo < -lim || hi >= lim || lo > -0.99*lim || hi < 0.99*lim {
		t.Errorf("GlorotUniform range [%v, %v], want about ±%v", lo, hi, lim)
	}
	z, _ := in.Normal(tensor.Float32, 0, 3)
	if z.Float32s()[0] != 0 || z.Float32s()[2] != 0 {
		t.Errorf("std 0: %v", z.Float32s())
	}
	// A bfloat16 draw is rounded once from float64. Through float32 the first two landed on a
	// point halfway between two bfloat16 values and went the wrong way (0x3f80, 0x3f82), and
	// the last went to +Inf, an error.
	for _, c := range []struct {
		x    float64
		want uint16
	}{
		{1 + 0x1p-8 + 0x1p-30, 0x3f81},
		{1 + 3*0x1p-8 - 0x1p-30, 0x3f81},
		{1 + 0x1p-8, 0x3f80}, // a true tie: even
		{-1 - 0x1p-8 - 0x1p-30, 0xbf81},
		{(0x1p128 - 0x1p119) * (1 - 0x1p-40), 0x7f7f}, // just below the overflow point
	} {
		u, err := NewInit(1).Uniform(bfloat16.Dtype, c.x, c.x, 2)
		if err != nil {
			t.Errorf("Uniform(bfloat16, %v, %v): %v", c.x, c.x, err)
			continue
		}
		if got := u.Data().([]bfloat16.BFloat16)[1]; uint16(got) != c.want {
			t.Errorf("Uniform(bfloat16, %v, %v) = %#04x, want %#04x", c.x, c.x, uint16(got), c.want)
		}
	}
}

func TestInitErrors(t *testing.T) {
	in := NewInit(1)
	tests := []struct {
		name string
		f    func() error
		want string
	}{
		{"dtype", func() error { _, err := in.Normal(tensor.Int32, 1, 2); return err }, "dtype int32"},
		// The zero tensor.Dtype (moe.Config's default Dtype, say) used to panic in dt.Size.
		{"zero dtype", func() error { _, err := in.HeNormal(tensor.Dtype{}, 1, 3, 4); return err }, "Init.HeNormal: the zero dtype"},
		{"no shape", func() error { _, err := in.Normal(tensor.Float32, 1); return err }, "no shape"},
		{"zero dim", func() error { _, err := in.Uniform(tensor.Float32, 0, 1, 2, 0); return err }, "shape [2 0] has a dimension below 1"},
		{"huge", func() error { _, err := in.Normal(tensor.Float32, 1, 1<<20, 1<<20); return err }, "has more than 2147483647 elements"},
		{"std", func() error { _, err := in.Normal(tensor.Float32, -1, 2); return err }, "std -1"},
		{"range", func() error { _, err := in.Uniform(tensor.Float32, 1, 0, 2); return err }, "range [1, 0)"},
		{"fan", func() error { _, err := in.HeNormal(tensor.Float32, 1); return err }, "no shape"},
		// A negative gain used to be reported as "range [1, -1)" (Glorot) or "std -0.7" (He).
		{"Glorot gain", func() error { _, err := in.GlorotUniform(tensor.Float32, -1, 3, 3); return err }, "Init.GlorotUniform: gain -1, want a finite value >= 0"},
		{"He gain", func() error { _, err := in.HeNormal(tensor.Float32, math.NaN(), 3, 3); return err }, "Init.HeNormal: gain NaN"},
		// Draws beyond the dtype's range (they came back as ±Inf, with no error).
		{"float32 range", func() error { _, err := in.Uniform(tensor.Float32, -1e300, 1e300, 4); return err }, "beyond what float32 holds"},
		{"float32 std", func() error { _, err := in.Normal(tensor.Float32, 1e300, 4); return err }, "beyond what float32 holds"},
		{"bfloat16 range", func() error { _, err := in.Uniform(bfloat16.Dtype, 3.397e38, 3.4e38, 4); return err }, "beyond what BFloat16 holds"},
		{"float64 std", func() error { _, err := in.Normal(tensor.Float64, 1e308, 64); return err }, "beyond what float64 holds"},
		// A nil or zero *Init (no random source) used to panic on its first draw.
		{"nil Init", func() error { _, err := (*Init)(nil).Normal(tensor.Float32, 1, 2); return err }, "Init.Normal on a nil or zero *Init"},
		{"nil Init, no draw", func() error { _, err := (*Init)(nil).Normal(tensor.Float32, 0, 2); return err }, "Init.Normal on a nil or zero *Init"},
		{"zero Init", func() error { _, err := new(Init).Uniform(tensor.Float32, 0, 1, 2); return err }, "Init.Uniform on a nil or zero *Init"},
		{"zero Init He", func() error { _, err := new(Init).HeNormal(tensor.Float32, 1, 2, 2); return err }, "Init.HeNormal on a nil or zero *Init"},
		{"nil Init Glorot", func() error { _, err := (*Init)(nil).GlorotUniform(tensor.Float64, 1, 2, 2); return err }, "Init.GlorotUniform on a nil or zero *Init"},
	}
	for _, tt := range tests {
		err := noPanic(tt.f)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	// A tensor larger than the memory this process may use is an error before it is
	// allocated (it used to be allocated: up to 2^31 elements, 16 GiB of float64, whatever the
	// memory).
	func() {
		defer hostmem.SetLimit(hostmem.SetLimit(1 << 20))
		for _, c := range []struct {
			name string
			f    func() error
		}{
			{"Normal", func() error { _, err := in.Normal(tensor.Float64, 1, 1<<10, 1<<8); return err }},
			{"Uniform", func() error { _, err := in.Uniform(tensor.Float32, 0, 1, 1<<19); return err }},
			{"HeNormal", func() error { _, err := in.HeNormal(bfloat16.Dtype, 1, 1<<10, 1<<10); return err }},
			{"GlorotUniform", func() error { _, err := in.GlorotUniform(tensor.Float32, 1, 1<<10, 1<<10); return err }},
		} {
			// The error names the method called, not the one it draws through.
			err := c.f()
			want := "gomoe: train: Init." + c.name + ":"
			if err == nil || !strings.Contains(err.Error(), "bytes of memory this process may use") || !strings.Contains(err.Error(), want) {
				t.Errorf("%s beyond the memory limit: %v, want an error about the memory", c.name, err)
			}
		}
		if _, err := in.Normal(tensor.Float64, 1, 1<<10, 1<<6); err != nil {
			t.Errorf("512 KiB under a 1 MiB limit: %v", err)
		}
	}()
	// A float64 range wider than float64 holds (hi − lo overflows) draws inside it: all used
	// to be +Inf.
	w, err := in.Uniform(tensor.Float64, -math.MaxFloat64, math.MaxFloat64, 64)
	if err != nil {
		t.Fatal(err)
	}
	g, err := in.GlorotUniform(tensor.Float64, 1e308, 2, 2) // a = 1.22e308
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range append(w.Float64s(), g.Float64s()...) {
		if !(v >= -math.MaxFloat64 && v < math.MaxFloat64) {
			t.Fatalf("draw %d of a range past float64's = %v", i, v)
		}
	}
	if _, err := NewInitFrom(nil); err == nil {
		t.Error("NewInitFrom(nil): no error")
	}
}

func stddev(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m += x
	}
	m /= float64(len(v))
	s := 0.0
	for _, x := range v {
		s += (x - m) * (x - m)
	}
	return math.Sqrt(s / float64(len(v)))
}

// TestLinearEndsAtFloor: the doc says Linear decays "down to Peak·Floor at step Total−1, and
// Peak·Floor after". 1−(1−Floor)·1 is not Floor in float64 for most floors (0.1: it is
// 0.09999999999999998), so step Total−1 ran below the floor and the rate went up at Total.
func TestLinearEndsAtFloor(t *testing.T) {
	for _, floor := range []float64{0.1, 0.2, 1.0 / 3, 0.05, 0.7} {
		l := Linear{Peak: 1e-3, Floor: floor, Warmup: 2, Total: 10}
		end, after := l.LR(9), l.LR(10)
		if end != l.Peak*floor || end < after {
			t.Errorf("Floor %v: LR(Total-1) = %v, LR(Total) = %v, want both Peak·Floor = %v", floor, end, after, l.Peak*floor)
		}
	}
}
