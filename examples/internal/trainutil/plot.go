package trainutil

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/gomoe/gomoe/internal/atomicfile"
	"github.com/gomoe/gomoe/train"
)

// Series is one named curve of a line plot.
type Series struct {
	Name string
	X, Y []float64
	// Points draws a marker at every point (for sparse curves such as
	// evaluation results).
	Points bool
}

// SaveLines writes a line plot of the series as a PNG at path, with a
// logarithmic y axis when logY is set (non-positive values are then left
// out). Points that are not finite are left out; values whose range no axis
// can hold (wider than 1e300) are an error. A series of one point (or of one
// point repeated) is drawn as a marker.
func SaveLines(path, title, xlabel, ylabel string, logY bool, series ...Series) error {
	if len(series) == 0 {
		return errors.New("trainutil: no series to plot")
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.X.Tick.Marker = intTicks{}
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	p.Add(plotter.NewGrid())
	drawn := 0
	lo, hi := plotter.XY{X: math.Inf(1), Y: math.Inf(1)}, plotter.XY{X: math.Inf(-1), Y: math.Inf(-1)}
	for i, s := range series {
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("trainutil: series %q has %d x and %d y values", s.Name, len(s.X), len(s.Y))
		}
		if len(s.X) == 0 {
			continue
		}
		xys := make(plotter.XYs, 0, len(s.X))
		for j := range s.X {
			x, y := s.X[j], s.Y[j]
			if logY && !(y > 0) || math.IsInf(x, 0) || math.IsInf(y, 0) || math.IsNaN(x) || math.IsNaN(y) {
				continue
			}
			xys = append(xys, plotter.XY{X: x, Y: y})
			lo.X, lo.Y, hi.X, hi.Y = min(lo.X, x), min(lo.Y, y), max(hi.X, x), max(hi.Y, y)
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("trainutil: series %q: %w", s.Name, err)
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		drawn++
		p.Legend.Add(s.Name, l)
		if s.Points || onePoint(xys) { // a line of one point draws nothing
			sc, err := plotter.NewScatter(xys)
			if err != nil {
				return fmt.Errorf("trainutil: series %q: %w", s.Name, err)
			}
			sc.Color = plotutil.Color(i)
			sc.Shape = draw.CircleGlyph{}
			p.Add(sc)
		}
	}
	if drawn == 0 { // gonum's axes cannot be drawn without data (a log axis panics)
		return errors.New("trainutil: no points to plot")
	}
	// gonum's tick search never ends on a range that overflows float64.
	if !(hi.X-lo.X <= 1e300 && hi.Y-lo.Y <= 1e300) {
		return fmt.Errorf("trainutil: the points span x %g to %g and y %g to %g, more than a plot's axes hold", lo.X, hi.X, lo.Y, hi.Y)
	}
	if logY && lo.Y == hi.Y { // gonum widens a flat axis to y±1, below 0 for y <= 1
		p.Y.Min, p.Y.Max = lo.Y/2, hi.Y*2
	}
	return saveLegendRight(p, path, 8*vg.Inch, 4*vg.Inch, 1.6*vg.Inch)
}

// SaveExpertLoad writes the expert-load distribution over training as a
// stacked area plot at path: at each snapshot, the band of expert e is that
// expert's share of the routed token slots, so a balanced router gives bands
// of equal height 1/E. A lone snapshot is drawn from step 0 to its step.
func SaveExpertLoad(path, title string, lt *train.LoadTracker) error {
	if lt == nil || len(lt.Steps) == 0 {
		return errors.New("trainutil: no expert-load snapshots to plot")
	}
	E := lt.Experts()
	if len(lt.Frac) != len(lt.Steps) {
		return fmt.Errorf("trainutil: the load tracker has %d steps and %d snapshots", len(lt.Steps), len(lt.Frac))
	}
	for i, f := range lt.Frac {
		if len(f) != E {
			return fmt.Errorf("trainutil: snapshot %d of the load tracker has %d experts, want %d", i, len(f), E)
		}
	}
	if first, last := slices.Min(lt.Steps), slices.Max(lt.Steps); !(last-first <= 1e300) { // NaN too
		return fmt.Errorf("trainutil: the load tracker's steps span %g to %g, more than a plot's axis holds", first, last)
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.X.Tick.Marker = intTicks{}
	p.Y.Label.Text = "share of routed token slots"
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = true
	p.Legend.Left = false
	// A lone snapshot (a run of one -log-every window or less) is drawn over its window, from
	// step 0: bands of one point have no area, and gonum drew nothing.
	steps, fracs := lt.Steps, lt.Frac
	if len(steps) == 1 {
		steps, fracs = []float64{0, steps[0]}, [][]float64{fracs[0], fracs[0]}
	}
	// Draw from the top band down so that each band's fill covers the rest.
	cum := make([][]float64, len(steps))
	for i, f := range fracs {
		cum[i] = make([]float64, E+1)
		for e := 0; e < E; e++ {
			cum[i][e+1] = cum[i][e] + f[e]
		}
	}
	for e := E - 1; e >= 0; e-- {
		xys := make(plotter.XYs, len(steps))
		for i := range steps {
			xys[i].X, xys[i].Y = steps[i], cum[i][e+1]
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("trainutil: expert %d: %w", e, err)
		}
		c := bandColor(e, E)
		l.FillColor = c
		l.Color = color.Gray{Y: 255}
		l.Width = vg.Points(0.5)
		p.Add(l)
	}
	for e := E - 1; e >= 0; e-- {
		// Legend entries top to bottom in the order the bands are stacked.
		l, _ := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}})
		l.Color = bandColor(e, E)
		l.Width = vg.Points(6)
		p.Legend.Add(fmt.Sprintf("e%d", e), l)
	}
	// Perfect balance lines at multiples of 1/E.
	for e := 1; e < E; e++ {
		y := float64(e) / float64(E)
		xys := plotter.XYs{{X: steps[0], Y: y}, {X: steps[len(steps)-1], Y: y}}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color = color.Gray{Y: 40}
		l.Dashes = []vg.Length{vg.Points(2), vg.Points(3)}
		l.Width = vg.Points(0.6)
		p.Add(l)
	}
	return saveLegendRight(p, path, 7*vg.Inch, 4*vg.Inch, vg.Inch*0.6)
}

// saveLegendRight draws p with its legend in a column of width lw on the
// right, outside the data area, and writes a PNG.
func saveLegendRight(p *plot.Plot, path string, w, h, lw vg.Length) (err error) {
	defer func() { // gonum reports what it cannot draw by panicking
		if r := recover(); r != nil {
			err = fmt.Errorf("trainutil: draw %s: %v", path, r)
		}
	}()
	c := vgimg.New(w, h)
	dc := draw.New(c)
	leg := p.Legend
	p.Legend = plot.NewLegend() // no entries: the plot draws no legend
	p.Draw(draw.Crop(dc, 0, -lw, 0, 0))
	p.Legend = leg
	leg.Top, leg.Left = true, true
	leg.YOffs = -p.Title.TextStyle.Height(p.Title.Text) - vg.Points(8)
	leg.Draw(draw.Crop(dc, w-lw, 0, 0, 0))
	// Whole or not at all: a run stopped mid-write leaves the last plot, not a broken PNG.
	if err := atomicfile.Write(path, func(w io.Writer) error {
		_, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(w)
		return err
	}); err != nil {
		return fmt.Errorf("trainutil: save %s: %w", path, err)
	}
	return nil
}

// bandColor spreads E hues around the colour wheel.
func bandColor(e, E int) color.Color {
	if E <= 7 {
		return plotutil.Color(e)
	}
	h := 0.85 * float64(e) / float64(E-1)
	return hsv(h, 0.55, 0.9)
}

func hsv(h, s, v float64) color.RGBA {
	i := int(h * 6)
	f := h*6 - float64(i)
	p, q, t := v*(1-s), v*(1-f*s), v*(1-(1-f)*s)
	var r, g, b float64
	switch i % 6 {
	case 0:
		r, g, b = v, t, p
	case 1:
		r, g, b = q, v, p
	case 2:
		r, g, b = p, v, t
	case 3:
		r, g, b = p, q, v
	case 4:
		r, g, b = t, p, v
	default:
		r, g, b = v, p, q
	}
	return color.RGBA{R: uint8(255 * r), G: uint8(255 * g), B: uint8(255 * b), A: 255}
}

// Smooth returns the exponential moving average of y with factor alpha in
// (0,1], bias-corrected so that early values are not pulled towards zero.
func Smooth(y []float64, alpha float64) []float64 {
	out := make([]float64, len(y))
	m, w := 0.0, 0.0
	for i, v := range y {
		m = (1-alpha)*m + alpha*v
		w = (1-alpha)*w + alpha
		out[i] = m / w
	}
	return out
}

// onePoint reports whether every point of xys is the first one.
func onePoint(xys plotter.XYs) bool {
	for _, p := range xys {
		if p != xys[0] {
			return false
		}
	}
	return true
}

// intTicks labels the default tick positions without trailing zeros.
type intTicks struct{}

// Ticks implements plot.Ticker.
func (intTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'f', -1, 64)
		}
	}
	return ts
}
