package main

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// mainArgsEnv makes the test binary run main with the arguments in it (one per line): the
// child process of TestHostileFlags, which checks main's exit status and message.
const mainArgsEnv = "GOMOE_EXAMPLE_MAIN_ARGS"

// TestHostileFlags: every bad flag value (negative, NaN, Inf, past what an int holds) makes
// the program exit with a non-zero status and a message naming the flag, before it reads any
// data or writes any file.
func TestHostileFlags(t *testing.T) {
	if args, ok := os.LookupEnv(mainArgsEnv); ok {
		os.Args = append([]string{"charlm"}, strings.Split(args, "\n")...)
		flag.CommandLine = flag.NewFlagSet("charlm", flag.ExitOnError)
		main()
		os.Exit(0)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"-sample -100", []string{"-sample", "-100"}, "-sample -100: want an integer in [0, 16777216]"},
		{"-temp NaN", []string{"-temp", "NaN"}, "-temp NaN: want a finite number > 0"},
		{"-temp -1", []string{"-temp", "-1"}, "-temp -1"},
		{"-train-mb NaN", []string{"-train-mb", "NaN"}, "-train-mb NaN"},
		{"-train-mb 1e300 (int wraps)", []string{"-train-mb", "1e300"}, "-train-mb 1e+300: want a finite number > 0 and <= 1e+06"},
		{"-held-mb -1", []string{"-held-mb", "-1"}, "-held-mb -1"},
		{"-lr NaN", []string{"-lr", "NaN"}, "-lr NaN"},
		{"-lr-floor 2", []string{"-lr-floor", "2"}, "-lr-floor 2"},
		{"-eval-every -1", []string{"-eval-every", "-1"}, "-eval-every -1"},
		{"-context 0", []string{"-context", "0"}, "-context 0"},
		{"-layers huge", []string{"-layers", "100000"}, "-layers 100000"},
		{"-topk 0", []string{"-topk", "0"}, "-topk 0"},
		{"-capacity NaN", []string{"-capacity", "NaN"}, "-capacity NaN"},
		{"-out empty", []string{"-out", ""}, "-out: empty output folder"},
		{"-device tpu", []string{"-device", "tpu"}, "tpu"},
		{"unknown flag (flag package: exit 2)", []string{"-nosuchflag"}, "flag provided but not defined: -nosuchflag"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			args := append([]string{"-out", out + "/plots", "-quiet"}, c.args...)
			cmd := exec.Command(os.Args[0], "-test.run=^TestHostileFlags$")
			cmd.Env = append(os.Environ(), mainArgsEnv+"="+strings.Join(args, "\n"))
			msg, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("exit status %v, want non-zero; output:\n%s", err, msg)
			}
			if !strings.Contains(string(msg), c.want) {
				t.Errorf("output %q does not name the flag (want %q)", msg, c.want)
			}
			if ents, _ := os.ReadDir(out); len(ents) != 0 {
				t.Errorf("a rejected run wrote %v", ents)
			}
		})
	}
}
