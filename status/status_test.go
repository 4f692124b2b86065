package status_test

import (
	"slices"
	"testing"

	"github.com/turnstile-dev/turnstile/status"
)

// Lagging names every stream without an answer or a leader and every
// replica that is offline or behind, and nothing that is current.
func TestLagging(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream status.Stream
		want   []string
	}{
		{"AllCurrent", status.Stream{Name: "S", Replicas: 3, Leader: "n0",
			Peers: []status.Peer{{Name: "n1", Current: true}, {Name: "n2", Current: true}}}, nil},
		{"SingleReplicaNeedsNoLeaderName", status.Stream{Name: "S", Replicas: 1}, nil},
		{"NoLeader", status.Stream{Name: "S", Replicas: 3}, []string{"stream S has no leader"}},
		{"NoAnswer", status.Stream{Name: "S", Error: "timeout"}, []string{"stream S did not answer: timeout"}},
		{"OfflineAndBehind", status.Stream{Name: "S", Replicas: 3, Leader: "n0",
			Peers: []status.Peer{{Name: "n1", Offline: true, Lag: 4}, {Name: "n2", Lag: 2}}},
			[]string{"stream S: replica on n1 is offline (lag 4)", "stream S: replica on n2 is catching up (lag 2)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := status.Report{Streams: []status.Stream{tc.stream}}.Lagging()
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Lagging() = %q, want %q", got, tc.want)
			}
		})
	}
}
