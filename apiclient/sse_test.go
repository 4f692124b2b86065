package apiclient

import (
	"strings"
	"testing"
)

func TestReadSSE(t *testing.T) {
	type msg struct {
		id   uint64
		data string
	}
	for _, tc := range []struct {
		name, in string
		want     []msg
		wantErr  bool
	}{
		{"Events", "retry: 1000\n: following after 0\n\nid: 1\ndata: {\"a\":1}\n\nid: 2\ndata: {\"a\":2}\n\n", []msg{{1, `{"a":1}`}, {2, `{"a":2}`}}, false},
		{"KeepAliveOnly", ": keepalive\n\n: keepalive\n\n", nil, false},
		{"MultiLineData", "id: 3\ndata: a\ndata: b\n\n", []msg{{3, "a\nb"}}, false},
		{"NoSpaceAfterColon", "id:4\ndata:x\n\n", []msg{{4, "x"}}, false},
		{"UnfinishedLast", "id: 5\ndata: x\n\nid: 6\ndata: y\n", []msg{{5, "x"}}, false},
		{"NoIDSkipped", "data: x\n\n", nil, false},
		{"BadID", "id: seven\ndata: x\n\n", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []msg
			_, err := readSSE(strings.NewReader(tc.in), func(id uint64, data []byte) error {
				got = append(got, msg{id, string(data)})
				return nil
			})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}
