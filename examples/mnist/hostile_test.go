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
		os.Args = append([]string{"mnist"}, strings.Split(args, "\n")...)
		flag.CommandLine = flag.NewFlagSet("mnist", flag.ExitOnError)
		main()
		os.Exit(0)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"-shift -1", []string{"-shift", "-1"}, "-shift -1: want an integer in [0, 27]"},
		{"-shift 100", []string{"-shift", "100"}, "-shift 100"},
		{"-target NaN", []string{"-target", "NaN"}, "-target NaN: want a finite number >= 0 and <= 1"},
		{"-target 2", []string{"-target", "2"}, "-target 2"},
		{"-lr NaN", []string{"-lr", "NaN"}, "-lr NaN"},
		{"-lr -1", []string{"-lr", "-1"}, "-lr -1"},
		{"-lr-floor NaN", []string{"-lr-floor", "NaN"}, "-lr-floor NaN"},
		{"-batch 0", []string{"-batch", "0"}, "-batch 0"},
		{"-steps -5", []string{"-steps", "-5"}, "-steps -5"},
		{"-epochs -1", []string{"-epochs", "-1"}, "-epochs -1"},
		{"-steps 0 -epochs 0", []string{"-steps", "0", "-epochs", "0"}, "need -steps > 0 or -epochs > 0"},
		{"-log-every 0", []string{"-log-every", "0"}, "-log-every 0"},
		{"-experts 0", []string{"-experts", "0"}, "-experts 0"},
		{"-aux NaN", []string{"-aux", "NaN"}, "-aux NaN"},
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
