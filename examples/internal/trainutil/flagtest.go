package trainutil

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"strings"
	"testing"
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
