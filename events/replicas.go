package events

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrReplicas means the NATS servers cannot hold the replicas asked for:
// one server that is not clustered, or a cluster with fewer JetStream
// servers than replicas (the server refuses at once; it does not wait for
// more to join).
var ErrReplicas = errors.New("the NATS servers cannot hold that many replicas")

// ValidateReplicas accepts 1, 3 or 5 replicas: a Raft group needs a
// majority, so an even count adds a server to wait for and no fault it
// survives.
func ValidateReplicas(n int) error {
	switch n {
	case 1, 3, 5:
		return nil
	}
	return fmt.Errorf("%d replicas: use 1, 3 or 5", n)
}

// replicasError makes the server's refusal of a replica count an
// ErrReplicas that says what to do; other errors pass through.
func replicasError(err error, replicas int) error {
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return err
	}
	switch api.ErrorCode {
	case jsErrCodeReplicasNotSupported:
		return fmt.Errorf("%w: %d replicas need a NATS cluster, and this server is not clustered (use 1 replica, or --nats-url to a cluster of at least %d JetStream servers): %w",
			ErrReplicas, replicas, replicas, err)
	case jsErrCodeClusterNoPeers, jsErrCodeInsufficientResources:
		return fmt.Errorf("%w: %d replicas need at least %d JetStream servers up in the cluster (with room in their limits): %w",
			ErrReplicas, replicas, replicas, err)
	}
	return err
}

// JetStream API error codes that nats.go has no constant for.
const (
	jsErrCodeClusterNoPeers        jetstream.ErrorCode = 10005
	jsErrCodeInsufficientResources jetstream.ErrorCode = 10023
	jsErrCodeReplicasNotSupported  jetstream.ErrorCode = 10074
	// Answers of servers that are not ready yet (NotReady).
	jsErrCodeIncompleteResults      jetstream.ErrorCode = 10004 // a listing while a peer does not answer
	jsErrCodeClusterNotAvailable    jetstream.ErrorCode = 10008 // "JetStream system temporarily unavailable"
	jsErrCodeClusterNotLeader       jetstream.ErrorCode = 10009 // a request that reached a leader stepping down
	jsErrCodeLastPerSubjectNotReady jetstream.ErrorCode = 10163 // "expected last sequence per subject temporarily unavailable"
)
