// Command logsource serves followed pod logs the way kube-apiserver's pod log endpoint does, for the
// fan-in benchmark (tests/bench/bench_log_fanin.py): GET /api/v1/namespaces/NS/pods/POD/log?follow=true
// streams, over HTTP/2 with TLS (a self-signed certificate made at start), "-lines" lines every second
// per stream, each with a kubelet-style RFC 3339 time in front and the Unix time it was written at the end
// (" w=1764489600.123456"); every tenth line is a trainrun:metric line. It never ends a stream itself.
// A source this cheap (Go, no files, no proxy) lets the benchmark measure the reader, not the source.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	lines := flag.Int("lines", 5, "lines per stream per second")
	flag.Parse()

	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, *lines)
	})}
	server.TLSConfig = &tls.Config{Certificates: []tls.Certificate{selfSigned()}, NextProtos: []string{"h2", "http/1.1"}}
	fmt.Printf("https://%s\n", listener.Addr())
	log.Fatal(server.ServeTLS(listener, "", ""))
}

func serve(w http.ResponseWriter, r *http.Request, lines int) {
	if !strings.HasSuffix(r.URL.Path, "/log") {
		http.NotFound(w, r)
		return
	}
	flusher := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	step := 0
	var text strings.Builder
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ticker.C:
		}
		text.Reset()
		for i := 0; i < lines; i++ {
			step++
			now := time.Now()
			stamp := now.UTC().Format(time.RFC3339Nano)
			written := float64(now.UnixNano()) / 1e9
			if step%10 == 0 {
				fmt.Fprintf(&text, "%s trainrun:metric {\"epoch\": 1, \"step\": %d, \"train_loss\": 0.5, \"note\": \"w=%.6f\"}\n", stamp, step, written)
			} else {
				fmt.Fprintf(&text, "%s epoch 1 step %d loss 0.5000 lr 0.001 images/s 812.5 w=%.6f\n", stamp, step, written)
			}
		}
		if _, err := w.Write([]byte(text.String())); err != nil {
			return
		}
		flusher.Flush()
	}
}

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	template := x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "logsource"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
