package train

import (
	"fmt"
	"math"
)

// Schedule gives the learning rate of each 0-based step; set the optimiser's LR from it
// before each step (opt.LR = sched.LR(step)). Cosine and Linear are schedules; they give a
// negative step the rate of step 0.
type Schedule interface {
	LR(step int) float64
}

// Cosine is linear warmup followed by cosine decay (as Hugging Face's
// get_cosine_schedule_with_warmup, with a floor):
//
//	step < Warmup:           Peak·(step+1)/Warmup
//	Warmup ≤ step < Total:   Peak·(Floor + (1−Floor)·½·(1 + cos(π·f))),  f = (step−Warmup)/(Total−Warmup−1)
//	step ≥ Total:            Peak·Floor
//
// so the first step after warmup runs at Peak and step Total−1 at Peak·Floor. Two differences
// from Hugging Face's: its progress is (step−Warmup)/(Total−Warmup), so its last step runs
// a little above the floor (0.024·Peak for Cosine{Peak, Total: 10}, where this one gives
// Peak·Floor = 0), and its warmup starts at 0; this one's starts at Peak/Warmup, so that no
// step is taken with a zero rate. No rate is
// more than one rounding above Peak (the last warmup step's Peak·Warmup/Warmup can round
// up), and a finite Peak gives finite rates, up to math.MaxFloat64.
type Cosine struct {
	// Peak is the rate at the end of warmup.
	Peak float64
	// Floor is the final rate as a fraction of Peak (0: decay to zero).
	Floor float64
	// Warmup is the number of warmup steps (0: none).
	Warmup int
	// Total is the number of steps of the run, warmup included.
	Total int
}

// LR returns the rate of step.
func (c Cosine) LR(step int) float64 {
	lr, f, decay := warmupDecay(step, c.Peak, c.Floor, c.Warmup, c.Total)
	if !decay {
		return lr
	}
	return c.Peak * (c.Floor + (1-c.Floor)*0.5*(1+math.Cos(math.Pi*f)))
}

// warmupDecay is what the schedules share: during the warmup, from Total on (Peak·Floor) and
// on the only step of a one-step decay (Peak) it returns the rate itself; during the decay it
// returns its progress f, 0 at step warmup to 1 at step total-1, and decay true.
func warmupDecay(step int, peak, floor float64, warmup, total int) (lr, f float64, decay bool) {
	step = max(step, 0) // no negative rate, and no 0/0 without a warmup
	if step < warmup {
		// Peak·(step+1)/Warmup in that order (the bits of every rate before), but the fraction
		// first where Peak·(step+1) overflows: a Peak near math.MaxFloat64 gave +Inf.
		if lr := peak * float64(step+1); !math.IsInf(lr, 0) {
			return lr / float64(warmup), 0, false
		}
		return peak * (float64(step+1) / float64(warmup)), 0, false
	}
	if step >= total {
		return peak * floor, 0, false
	}
	n := total - warmup
	if n <= 1 {
		return peak, 0, false
	}
	return 0, float64(step-warmup) / float64(n-1), true
}

// Validate reports a schedule that cannot run: a Peak that is not positive and finite, a
// Floor outside [0, 1], a negative Warmup or a Total not above Warmup.
func (c Cosine) Validate() error { return validSchedule("Cosine", c.Peak, c.Floor, c.Warmup, c.Total) }

// Linear is linear warmup followed by linear decay (Hugging Face's
// get_linear_schedule_with_warmup, with a floor and Cosine's two differences from Hugging
// Face's): Peak·(step+1)/Warmup during warmup, then from Peak at step Warmup down to
// Peak·Floor at step Total−1, and Peak·Floor after.
type Linear struct {
	// Peak, Floor, Warmup and Total are as in Cosine.
	Peak, Floor   float64
	Warmup, Total int
}

// LR returns the rate of step.
func (l Linear) LR(step int) float64 {
	lr, f, decay := warmupDecay(step, l.Peak, l.Floor, l.Warmup, l.Total)
	if !decay {
		return lr
	}
	// Floor + (1−Floor)·(1−f), not 1 − (1−Floor)·f: at f = 1 that is Floor exactly (1 − (1 − 0.1)
	// is 0.09999999999999998, so step Total−1 ran below Peak·Floor and the rate rose at Total).
	return l.Peak * (l.Floor + (1-l.Floor)*(1-f))
}

// Validate reports a schedule that cannot run (see Cosine.Validate).
func (l Linear) Validate() error { return validSchedule("Linear", l.Peak, l.Floor, l.Warmup, l.Total) }

func validSchedule(name string, peak, floor float64, warmup, total int) error {
	switch {
	case !(peak > 0) || math.IsInf(peak, 0):
		return fmt.Errorf("gomoe: train: %s: Peak %v, want a finite rate > 0", name, peak)
	case !(floor >= 0 && floor <= 1):
		return fmt.Errorf("gomoe: train: %s: Floor %v, want a fraction of Peak in [0, 1]", name, floor)
	case warmup < 0 || total <= warmup:
		return fmt.Errorf("gomoe: train: %s: Warmup %d and Total %d, want 0 <= Warmup < Total", name, warmup, total)
	}
	return nil
}
