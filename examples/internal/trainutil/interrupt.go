package trainutil

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// interrupts catches the first interrupt (Ctrl-C) or SIGTERM and then lets the next one end the
// program at once, whether or not the loop has looked at the first yet: a second Ctrl-C during
// a long step is not held back until the step ends.
type interrupts struct {
	sig   chan os.Signal // what signal.Notify delivers
	first chan os.Signal // the first signal, once it came
	done  chan struct{}  // closed by stop
	once  sync.Once
}

// watchInterrupts starts catching interrupts; stop ends it.
func watchInterrupts() *interrupts {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	w := &interrupts{sig: sig, first: make(chan os.Signal, 1), done: make(chan struct{})}
	go func() {
		select {
		case s := <-sig:
			signal.Stop(sig) // from here on the next interrupt takes its default action
			w.first <- s
		case <-w.done:
		}
	}()
	return w
}

// caught returns the first signal if one came.
func (w *interrupts) caught() (os.Signal, bool) {
	select {
	case s := <-w.first:
		return s, true
	default:
		return nil, false
	}
}

// stop stops catching interrupts, at once: an interrupt after it takes its default action
// (more calls do nothing).
func (w *interrupts) stop() {
	w.once.Do(func() {
		signal.Stop(w.sig)
		close(w.done)
	})
}
