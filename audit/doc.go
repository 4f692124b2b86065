// Package audit replays workspace histories through the lifecycle and
// reports every way they disagree: an event that was not legal from the
// state before it, a stored state that is not what the replay produces, a
// gap or repeat in a workspace's sequence.
//
// It reads only what it is given; fetching histories is the caller's job.
package audit
