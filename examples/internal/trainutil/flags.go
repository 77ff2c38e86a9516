package trainutil

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"

	"github.com/gomoe/gomoe/internal/hostmem"
)

// AddFlags registers on fs the command-line flags that set the fields of cfg
// (-experts, -topk, -hidden, -ffn, -act, -capacity, -drop, -aux, -zloss and
// -dense), with cfg's current values as defaults. denseUsage is the help
// text of -dense, which names the example's blocks.
func (cfg *BlockConfig) AddFlags(fs *flag.FlagSet, denseUsage string) {
	fs.IntVar(&cfg.Experts, "experts", cfg.Experts, "number of experts E")
	fs.IntVar(&cfg.TopK, "topk", cfg.TopK, "experts per token K")
	fs.IntVar(&cfg.Hidden, "hidden", cfg.Hidden, "model width H")
	fs.IntVar(&cfg.FFN, "ffn", cfg.FFN, "expert FFN size F")
	fs.StringVar(&cfg.Act, "act", cfg.Act, "expert activation: swiglu or gelu")
	fs.Float64Var(&cfg.Capacity, "capacity", cfg.Capacity, "capacity factor; 0 = dropless")
	fs.StringVar(&cfg.Drop, "drop", cfg.Drop, "drop policy in capacity mode: probs or position")
	fs.Float64Var(&cfg.AuxCoef, "aux", cfg.AuxCoef, "load-balancing loss coefficient")
	fs.Float64Var(&cfg.ZCoef, "zloss", cfg.ZCoef, "router z-loss coefficient")
	fs.BoolVar(&cfg.Dense, "dense", cfg.Dense, denseUsage)
}

// FirstError returns the first of errs that is not nil, or nil: the checks of a
// configuration's flags, in the order they are reported.
func FirstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// IntFlag checks the value v of the integer flag -name against [lo, hi] and returns an error
// naming the flag otherwise.
func IntFlag(name string, v, lo, hi int) error {
	if v < lo || v > hi {
		if hi == math.MaxInt {
			return fmt.Errorf("-%s %d: want an integer >= %d", name, v, lo)
		}
		return fmt.Errorf("-%s %d: want an integer in [%d, %d]", name, v, lo, hi)
	}
	return nil
}

// FloatFlag checks the value v of the float flag -name: a finite number in [lo, hi] (with
// lo excluded if open), and returns an error naming the flag otherwise (NaN and ±Inf
// included).
func FloatFlag(name string, v, lo, hi float64, open bool) error {
	ok := !math.IsNaN(v) && !math.IsInf(v, 0) && v >= lo && v <= hi && (!open || v > lo)
	if ok {
		return nil
	}
	low := fmt.Sprintf(">= %g", lo)
	if open {
		low = fmt.Sprintf("> %g", lo)
	}
	if math.IsInf(hi, 1) || hi == math.MaxFloat64 {
		return fmt.Errorf("-%s %g: want a finite number %s", name, v, low)
	}
	return fmt.Errorf("-%s %g: want a finite number %s and <= %g", name, v, low, hi)
}

// Main runs an example's training run with its report on stdout and its progress bar on
// stderr (no bar when quiet); on an error it prints the error after the program's name prog
// on stderr and exits with status 1. Call it from main after parsing the flags. Unless
// GOMEMLIMIT is set, it sets the Go runtime's soft memory limit to 90 % of the memory this
// process may use.
func Main(prog string, quiet bool, run func(out, bar io.Writer) error) {
	var bar io.Writer = os.Stderr
	if quiet {
		bar = nil
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// Near the memory this process may use, the collector works harder instead of
		// letting the heap grow past it (Go does not read a container's limit itself).
		debug.SetMemoryLimit(int64(hostmem.Total() / 10 * 9))
	}
	if err := run(os.Stdout, bar); err != nil {
		fmt.Fprintln(os.Stderr, prog+":", err)
		os.Exit(1)
	}
}
