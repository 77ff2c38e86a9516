package trainutil

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomoe/gomoe/safetensors"
)

// BadFlag is one rejected command line of an example: its arguments and a piece of the
// message the program must print.
type BadFlag struct {
	Name string
	Args []string
	Want string
}

// badFlagsEnv makes the test binary run the example's main with the arguments in it (one per
// line): the child process of CheckBadFlags.
const badFlagsEnv = "GOMOE_EXAMPLE_MAIN_ARGS"

// CheckBadFlags runs the example's main (program name prog) in a child process of the test
// binary for each case, with -out in a fresh folder and -quiet before the case's arguments,
// and checks that it exits with a non-zero status, prints the case's message and writes
// nothing. Call it from the test named test; in the child process it runs main and exits.
func CheckBadFlags(t *testing.T, test, prog string, main func(), cases []BadFlag) {
	if args, ok := os.LookupEnv(badFlagsEnv); ok {
		os.Args = append([]string{prog}, strings.Split(args, "\n")...)
		flag.CommandLine = flag.NewFlagSet(prog, flag.ExitOnError)
		main()
		os.Exit(0)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			out := t.TempDir()
			args := append([]string{"-out", out + "/plots", "-quiet"}, c.Args...)
			cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
			cmd.Env = append(os.Environ(), badFlagsEnv+"="+strings.Join(args, "\n"))
			msg, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("exit status %v, want non-zero; output:\n%s", err, msg)
			}
			if !strings.Contains(string(msg), c.Want) {
				t.Errorf("output %q does not name the flag (want %q)", msg, c.Want)
			}
			if ents, _ := os.ReadDir(out); len(ents) != 0 {
				t.Errorf("a rejected run wrote %v", ents)
			}
		})
	}
}

// CheckInterrupt runs the example's main (program name prog) in a child process of the test
// binary, as CheckBadFlags does, with -quiet, -log-every 1, -save in a fresh folder, -out,
// -steps interruptSteps (a run long enough not to end by itself) and args; it sends the child
// an interrupt (Ctrl-C) once the first step's log line is out, and checks that the child stops
// cleanly: a non-zero exit status (not a death by the signal), a message that it was
// interrupted and where the checkpoint went, and a checkpoint that names a step done, before
// the run's end. Call it from the test named test; in the child process it runs main and exits.
func CheckInterrupt(t *testing.T, test, prog string, main func(), args []string) {
	t.Helper()
	if args, ok := os.LookupEnv(badFlagsEnv); ok {
		os.Args = append([]string{prog}, strings.Split(args, "\n")...)
		flag.CommandLine = flag.NewFlagSet(prog, flag.ExitOnError)
		main()
		os.Exit(0)
	}
	if runtime.GOOS == "windows" {
		t.Skip("os.Process.Signal cannot send an interrupt on Windows")
	}
	dir := t.TempDir()
	save := filepath.Join(dir, "ckpt")
	args = append([]string{"-quiet", "-log-every", "1", "-save", save, "-out", filepath.Join(dir, "plots"), "-steps", strconv.Itoa(interruptSteps)}, args...)
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), badFlagsEnv+"="+strings.Join(args, "\n"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	var out bytes.Buffer
	sc := bufio.NewScanner(stdout)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		if !sent && strings.HasPrefix(line, "step ") {
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			sent = true
		}
	}
	err = cmd.Wait()
	msg := out.String() + stderr.String()
	if !sent {
		t.Fatalf("the run logged no step; output:\n%s", msg)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() <= 0 {
		t.Fatalf("interrupted run: %v, want a non-zero exit status (not a death by the signal); output:\n%s", err, msg)
	}
	if !strings.Contains(msg, "interrupted") || !strings.Contains(msg, "-resume "+save) {
		t.Errorf("the interrupted run does not say so and how to resume (-resume %s); output:\n%s", save, msg)
	}
	ts, err := safetensors.Open(filepath.Join(save, CheckpointFile))
	if err != nil {
		t.Fatalf("no checkpoint after the interrupt: %v; output:\n%s", err, msg)
	}
	defer ts.Close()
	step, err := strconv.Atoi(ts.Metadata()["step"])
	if err != nil || step < 1 || step >= interruptSteps {
		t.Fatalf("checkpoint step %q, want a step in [1, %d): the run was not interrupted; output:\n%s", ts.Metadata()["step"], interruptSteps, msg)
	}
	if ents, _ := os.ReadDir(save); len(ents) != 1 {
		t.Errorf("the checkpoint folder holds %v, want only %s", ents, CheckpointFile)
	}
}

// interruptSteps is the -steps of CheckInterrupt's run: more than it can reach before the
// interrupt.
const interruptSteps = 100000
