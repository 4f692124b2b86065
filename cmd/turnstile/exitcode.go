package main

import (
	"context"
	"errors"
	"strconv"

	"github.com/turnstile-dev/turnstile/client"
	"github.com/turnstile-dev/turnstile/fsm"
)

// Exit codes.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitRejected = 3
	exitTimeout  = 4
)

// exitCodeOf is the one table from a rejection code to an exit code: a
// malformed command is a usage error, every refusal by the lifecycle is
// "rejected".
func exitCodeOf(c fsm.Code) int {
	switch c {
	case fsm.CodeInvalid:
		return exitUsage
	case fsm.CodeNotFound, fsm.CodeExists, fsm.CodeBusy, fsm.CodeGone:
		return exitRejected
	}
	return exitError
}

// codedError carries an exit code with an error. quiet means the message
// has been printed already.
type codedError struct {
	code  int
	err   error
	quiet bool
}

func (e *codedError) Error() string {
	if e.err == nil {
		return "exit status " + strconv.Itoa(e.code)
	}
	return e.err.Error()
}

func (e *codedError) Unwrap() error { return e.err }

func withCode(code int, err error) error { return &codedError{code: code, err: err} }

// usageError marks bad input found by a command itself.
func usageError(err error) error { return withCode(exitUsage, err) }

// codeOf decides the exit code of err. started tells whether a command's
// own code ran: errors before that come from parsing the command line.
func codeOf(err error, started bool) int {
	var ee *codedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case !started:
		return exitUsage
	case fsm.RejectionCode(err) != "":
		return exitCodeOf(fsm.RejectionCode(err))
	case errors.Is(err, client.ErrNoOutcome), errors.Is(err, context.DeadlineExceeded):
		return exitTimeout
	}
	return exitError
}
