package main

import (
	"testing"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
)

// TestHostileFlags: every bad flag value (negative, NaN, Inf, past what an int holds) makes
// the program exit with a non-zero status and a message naming the flag, before it reads any
// data or writes any file.
func TestHostileFlags(t *testing.T) {
	trainutil.CheckBadFlags(t, "TestHostileFlags", "mnist", main, []trainutil.BadFlag{
		{Name: "-shift -1", Args: []string{"-shift", "-1"}, Want: "-shift -1: want an integer in [0, 27]"},
		{Name: "-shift 100", Args: []string{"-shift", "100"}, Want: "-shift 100"},
		{Name: "-target NaN", Args: []string{"-target", "NaN"}, Want: "-target NaN: want a finite number >= 0 and <= 1"},
		{Name: "-target 2", Args: []string{"-target", "2"}, Want: "-target 2"},
		{Name: "-lr NaN", Args: []string{"-lr", "NaN"}, Want: "-lr NaN"},
		{Name: "-lr -1", Args: []string{"-lr", "-1"}, Want: "-lr -1"},
		{Name: "-lr-floor NaN", Args: []string{"-lr-floor", "NaN"}, Want: "-lr-floor NaN"},
		{Name: "-batch 0", Args: []string{"-batch", "0"}, Want: "-batch 0"},
		{Name: "-steps -5", Args: []string{"-steps", "-5"}, Want: "-steps -5"},
		{Name: "-epochs -1", Args: []string{"-epochs", "-1"}, Want: "-epochs -1"},
		{Name: "-steps 0 -epochs 0", Args: []string{"-steps", "0", "-epochs", "0"}, Want: "need -steps > 0 or -epochs > 0"},
		{Name: "-log-every 0", Args: []string{"-log-every", "0"}, Want: "-log-every 0"},
		{Name: "-experts 0", Args: []string{"-experts", "0"}, Want: "-experts 0"},
		{Name: "-aux NaN", Args: []string{"-aux", "NaN"}, Want: "-aux NaN"},
		{Name: "-device tpu", Args: []string{"-device", "tpu"}, Want: "tpu"},
		{Name: "unknown flag (flag package: exit 2)", Args: []string{"-nosuchflag"}, Want: "flag provided but not defined: -nosuchflag"},
	})
}
