// fake-gcs-server with the XML API writes that object_store (obstore, trainrun's object-store library) sends.
//
// fake-gcs-server v1.56.1 serves the JSON API, and of the XML API only reads and listings: an XML PUT of an
// object is refused ("invalid uploadType"), XML multipart uploads are missing, and x-goog-if-generation-match
// is not honoured (fsouza/fake-gcs-server issues 331 and 852; the pull request that adds them, 1164, is open,
// and object_store's own CI runs a fork). This program is fake-gcs-server's own server (its fakestorage
// library, the same storage, JSON API and XML reads) behind a small gateway that adds, on the XML API only:
//
//   - PUT /<bucket>/<object>: a simple upload, with x-goog-if-generation-match (0: only if absent) -> 412
//   - POST ?uploads, PUT ?partNumber&uploadId, POST ?uploadId, DELETE ?uploadId: a multipart upload
//   - a listing of a bucket that does not exist: 404 NoSuchBucket (fake-gcs-server answers 500)
//   - with -verify-key: a bearer token that is a JWT must be signed (RS256) by that key, else 401, as GCS
//     refuses a service account whose key it does not know; requests without one are served (the emulator's
//     anonymous access).
//
// Built by tests/storage/emulators.sh; started by tests/storage/emulators.py for the storage tests, the
// integration tests and the upload benchmark. Listens on one port, http or https (-scheme).
package main

import (
	"bytes"
	"crypto"
	"crypto/md5"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

type gateway struct {
	fake       *fakestorage.Server
	inner      http.Handler
	publicHost string
	partsDir   string
	verifyKey  *rsa.PublicKey

	mu      sync.Mutex // makes a conditional write's check and write one step
	uploads sync.Map   // upload id -> *upload
	nextID  uint64
}

type upload struct {
	bucket, object, contentType string
	mu                          sync.Mutex
	parts                       map[int]string // part number -> file
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Uint("port", 4443, "port to listen on")
	scheme := flag.String("scheme", "https", "http or https")
	cert := flag.String("cert-location", "", "server certificate (PEM), for https")
	key := flag.String("private-key-location", "", "server private key (PEM), for https")
	root := flag.String("filesystem-root", "", "where the objects are kept (empty: in memory)")
	publicHost := flag.String("public-host", "", "the host the XML API is served at (default host:port)")
	verifyKey := flag.String("verify-key", "", "PEM public key: bearer JWTs must be signed by it")
	flag.Parse()

	address := net.JoinHostPort(*host, strconv.FormatUint(uint64(*port), 10))
	if *publicHost == "" {
		*publicHost = address
	}
	options := fakestorage.Options{
		Scheme:      *scheme,
		Host:        *host,
		Port:        uint16(*port),
		NoListener:  true,
		PublicHost:  *publicHost,
		ExternalURL: fmt.Sprintf("%s://%s", *scheme, address),
		StorageRoot: *root,
		Writer:      os.Stderr,
	}
	fake, err := fakestorage.NewServerWithOptions(options)
	if err != nil {
		log.Fatalf("cannot start fake-gcs-server: %v", err)
	}
	parts, err := os.MkdirTemp("", "fakegcs-parts-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(parts)
	g := &gateway{fake: fake, inner: fake.HTTPHandler(), publicHost: *publicHost, partsDir: parts}
	if *verifyKey != "" {
		if g.verifyKey, err = readPublicKey(*verifyKey); err != nil {
			log.Fatalf("-verify-key: %v", err)
		}
	}
	listener, err := net.Listen("tcp", address)
	if err != nil {
		log.Fatal(err)
	}
	if *scheme == "https" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatalf("https needs -cert-location and -private-key-location: %v", err)
		}
		listener = tls.NewListener(listener, &tls.Config{Certificates: []tls.Certificate{pair}})
	}
	go func() {
		if err := http.Serve(listener, g); err != nil && !errors.Is(err, net.ErrClosed) {
			log.Fatal(err)
		}
	}()
	log.Printf("server started at %s://%s", *scheme, address)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	listener.Close()
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.verifyKey != nil && !g.authorized(r) {
		xmlError(w, http.StatusUnauthorized, "AuthenticationRequired", "Invalid Credentials")
		return
	}
	if bucket, listing := g.xmlBucket(r); listing && r.Method == http.MethodGet && !g.bucketExists(w, bucket) {
		return // fake-gcs-server answers 500 for the listing of a bucket that does not exist; GCS says 404
	}
	bucket, object, ok := g.xmlObject(r)
	if ok {
		query := r.URL.Query()
		switch {
		case r.Method == http.MethodPut && query.Has("uploadId"):
			g.putPart(w, r, query)
			return
		case r.Method == http.MethodPut && r.Header.Get("x-goog-copy-source") == "":
			g.putObject(w, r, bucket, object)
			return
		case r.Method == http.MethodPost && query.Has("uploads"):
			g.initiate(w, r, bucket, object)
			return
		case r.Method == http.MethodPost && query.Has("uploadId"):
			g.complete(w, r, query)
			return
		case r.Method == http.MethodDelete && query.Has("uploadId"):
			g.abort(w, query)
			return
		}
	}
	g.inner.ServeHTTP(w, r)
}

// xmlBucket: the bucket of an XML API request on a bucket (a listing), at the public host.
func (g *gateway) xmlBucket(r *http.Request) (string, bool) {
	path := strings.TrimSuffix(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	if r.Host != g.publicHost || path == "" || strings.Contains(path, "/") || strings.HasPrefix(path, "_internal") {
		return "", false
	}
	bucket, err := url.PathUnescape(path)
	return bucket, err == nil
}

// xmlObject: the bucket and object of an XML API request (path-style, at the public host).
func (g *gateway) xmlObject(r *http.Request) (string, string, bool) {
	if r.Host != g.publicHost {
		return "", "", false
	}
	path := strings.TrimPrefix(r.URL.EscapedPath(), "/")
	for _, api := range []string{"storage/", "upload/", "download/", "batch/", "_internal/"} {
		if strings.HasPrefix(path, api) {
			return "", "", false
		}
	}
	rawBucket, rawObject, found := strings.Cut(path, "/")
	if !found || rawObject == "" {
		return "", "", false
	}
	bucket, err1 := url.PathUnescape(rawBucket)
	object, err2 := url.PathUnescape(rawObject)
	if err1 != nil || err2 != nil {
		return "", "", false
	}
	return bucket, object, true
}

func (g *gateway) putObject(w http.ResponseWriter, r *http.Request, bucket, object string) {
	if !g.bucketExists(w, bucket) {
		return
	}
	file, sums, err := g.spool(r.Body)
	if err != nil {
		xmlError(w, http.StatusBadRequest, "IncompleteBody", err.Error())
		return
	}
	defer os.Remove(file.Name())
	g.store(w, r, bucket, object, r.Header.Get("Content-Type"), file, sums)
}

// store writes the object (honouring x-goog-if-generation-match) and answers with its ETag and generation.
func (g *gateway) store(w http.ResponseWriter, r *http.Request, bucket, object, contentType string, file *os.File, sums checksums) {
	defer file.Close()
	g.mu.Lock()
	defer g.mu.Unlock()
	if match := r.Header.Get("x-goog-if-generation-match"); match != "" {
		generation := int64(0)
		if existing, err := g.fake.GetObjectStreaming(bucket, object); err == nil {
			generation = existing.Generation
			existing.Close()
		}
		if strconv.FormatInt(generation, 10) != match {
			xmlError(w, http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.")
			return
		}
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	obj := fakestorage.StreamingObject{
		ObjectAttrs: fakestorage.ObjectAttrs{
			BucketName:  bucket,
			Name:        object,
			Size:        sums.size,
			ContentType: contentType,
			Crc32c:      sums.crc32c(),
			Md5Hash:     sums.md5(),
			Etag:        sums.md5(),
		},
		Content: file,
	}
	if err := g.fake.CreateObjectStreaming(obj); err != nil {
		xmlError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	stored, err := g.fake.GetObjectStreaming(bucket, object)
	if err != nil {
		xmlError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	stored.Close()
	w.Header().Set("ETag", strconv.Quote(sums.md5Hex()))
	w.Header().Set("x-goog-generation", strconv.FormatInt(stored.Generation, 10))
	w.Header().Set("x-goog-hash", fmt.Sprintf("crc32c=%s,md5=%s", sums.crc32c(), sums.md5()))
	w.WriteHeader(http.StatusOK)
}

func (g *gateway) bucketExists(w http.ResponseWriter, bucket string) bool {
	if _, err := g.fake.Backend().GetBucket(bucket); err != nil {
		xmlError(w, http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist.")
		return false
	}
	return true
}

func (g *gateway) initiate(w http.ResponseWriter, r *http.Request, bucket, object string) {
	if !g.bucketExists(w, bucket) {
		return
	}
	g.mu.Lock()
	g.nextID++
	id := fmt.Sprintf("upload-%d", g.nextID)
	g.mu.Unlock()
	g.uploads.Store(id, &upload{bucket: bucket, object: object, contentType: r.Header.Get("Content-Type"), parts: map[int]string{}})
	writeXML(w, http.StatusOK, struct {
		XMLName  xml.Name `xml:"InitiateMultipartUploadResult"`
		Bucket   string   `xml:"Bucket"`
		Key      string   `xml:"Key"`
		UploadID string   `xml:"UploadId"`
	}{Bucket: bucket, Key: object, UploadID: id})
}

func (g *gateway) lookup(w http.ResponseWriter, query url.Values) *upload {
	value, ok := g.uploads.Load(query.Get("uploadId"))
	if !ok {
		xmlError(w, http.StatusNotFound, "NoSuchUpload", "The requested upload was not found.")
		return nil
	}
	return value.(*upload)
}

func (g *gateway) putPart(w http.ResponseWriter, r *http.Request, query url.Values) {
	up := g.lookup(w, query)
	if up == nil {
		return
	}
	number, err := strconv.Atoi(query.Get("partNumber"))
	if err != nil || number < 1 || number > 10000 {
		xmlError(w, http.StatusBadRequest, "InvalidArgument", "partNumber must be 1 to 10000")
		return
	}
	file, sums, err := g.spool(r.Body)
	if err != nil {
		xmlError(w, http.StatusBadRequest, "IncompleteBody", err.Error())
		return
	}
	file.Close()
	up.mu.Lock()
	if old, found := up.parts[number]; found {
		os.Remove(old)
	}
	up.parts[number] = file.Name()
	up.mu.Unlock()
	w.Header().Set("ETag", strconv.Quote(sums.md5Hex()))
	w.WriteHeader(http.StatusOK)
}

func (g *gateway) complete(w http.ResponseWriter, r *http.Request, query url.Values) {
	up := g.lookup(w, query)
	if up == nil {
		return
	}
	var request struct {
		Parts []struct {
			Number int    `xml:"PartNumber"`
			ETag   string `xml:"ETag"`
		} `xml:"Part"`
	}
	if err := xml.NewDecoder(r.Body).Decode(&request); err != nil || len(request.Parts) == 0 {
		xmlError(w, http.StatusBadRequest, "MalformedCompleteMultipartUploadXml", "no parts listed")
		return
	}
	sort.SliceStable(request.Parts, func(i, j int) bool { return request.Parts[i].Number < request.Parts[j].Number })
	whole, err := os.CreateTemp(g.partsDir, "object-")
	if err != nil {
		xmlError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	defer os.Remove(whole.Name())
	sums := newChecksums()
	sink := io.MultiWriter(whole, sums)
	up.mu.Lock()
	for _, part := range request.Parts {
		name, found := up.parts[part.Number]
		if !found {
			up.mu.Unlock()
			whole.Close()
			xmlError(w, http.StatusBadRequest, "InvalidPart", fmt.Sprintf("part %d was not uploaded", part.Number))
			return
		}
		source, err := os.Open(name)
		if err == nil {
			_, err = io.Copy(sink, source)
			source.Close()
		}
		if err == nil { // each part goes once copied: a big object needs its size on disk once, not twice
			os.Remove(name)
			delete(up.parts, part.Number)
		}
		if err != nil {
			up.mu.Unlock()
			whole.Close()
			xmlError(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
	}
	up.mu.Unlock()
	if _, err := whole.Seek(0, io.SeekStart); err != nil {
		xmlError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	recorder := &headerRecorder{header: http.Header{}}
	g.store(recorder, r, up.bucket, up.object, up.contentType, whole, *sums)
	for key, values := range recorder.header {
		w.Header()[key] = values
	}
	if recorder.status != http.StatusOK {
		w.WriteHeader(recorder.status)
		w.Write(recorder.body.Bytes())
		return
	}
	g.forget(query.Get("uploadId"), up)
	writeXML(w, http.StatusOK, struct {
		XMLName xml.Name `xml:"CompleteMultipartUploadResult"`
		Bucket  string   `xml:"Bucket"`
		Key     string   `xml:"Key"`
		ETag    string   `xml:"ETag"`
	}{Bucket: up.bucket, Key: up.object, ETag: strconv.Quote(sums.md5Hex())})
}

func (g *gateway) abort(w http.ResponseWriter, query url.Values) {
	up := g.lookup(w, query)
	if up == nil {
		return
	}
	g.forget(query.Get("uploadId"), up)
	w.WriteHeader(http.StatusNoContent)
}

func (g *gateway) forget(id string, up *upload) {
	g.uploads.Delete(id)
	up.mu.Lock()
	for _, name := range up.parts {
		os.Remove(name)
	}
	up.parts = map[int]string{}
	up.mu.Unlock()
}

// spool copies a request body to a temporary file (rewound), with its checksums.
func (g *gateway) spool(body io.Reader) (*os.File, checksums, error) {
	file, err := os.CreateTemp(g.partsDir, "part-")
	if err != nil {
		return nil, checksums{}, err
	}
	sums := newChecksums()
	if _, err = io.Copy(io.MultiWriter(file, sums), body); err == nil {
		_, err = file.Seek(0, io.SeekStart)
	}
	if err != nil {
		file.Close()
		os.Remove(file.Name())
		return nil, checksums{}, err
	}
	return file, *sums, nil
}

// authorized: no bearer JWT (anonymous, as the emulator allows), or one signed by the known key.
func (g *gateway) authorized(r *http.Request) bool {
	token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found || strings.Count(token, ".") != 2 {
		return true
	}
	lastDot := strings.LastIndex(token, ".")
	signature, err := base64.RawURLEncoding.DecodeString(token[lastDot+1:])
	if err != nil {
		return false
	}
	digest := sha256.Sum256([]byte(token[:lastDot]))
	return rsa.VerifyPKCS1v15(g.verifyKey, crypto.SHA256, digest[:], signature) == nil
}

func readPublicKey(path string) (*rsa.PublicKey, error) {
	data, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := parsed.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("not an RSA public key")
	}
	return key, nil
}

type checksums struct {
	size int64
	md   hash.Hash
	crc  hash.Hash32
}

func newChecksums() *checksums {
	return &checksums{md: md5.New(), crc: crc32.New(crc32.MakeTable(crc32.Castagnoli))}
}

func (c *checksums) Write(p []byte) (int, error) {
	c.size += int64(len(p))
	c.md.Write(p)
	c.crc.Write(p)
	return len(p), nil
}

func (c checksums) md5() string    { return base64.StdEncoding.EncodeToString(c.md.Sum(nil)) }
func (c checksums) md5Hex() string { return hex.EncodeToString(c.md.Sum(nil)) }
func (c checksums) crc32c() string {
	return base64.StdEncoding.EncodeToString(c.crc.Sum(nil))
}

func xmlError(w http.ResponseWriter, status int, code, message string) {
	writeXML(w, status, struct {
		XMLName xml.Name `xml:"Error"`
		Code    string   `xml:"Code"`
		Message string   `xml:"Message"`
	}{Code: code, Message: message})
}

func writeXML(w http.ResponseWriter, status int, value any) {
	body, err := xml.Marshal(value)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/xml; charset=UTF-8")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	w.Write(body)
}

// headerRecorder keeps what store() answers, so complete() can answer in its own words.
type headerRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *headerRecorder) Header() http.Header         { return h.header }
func (h *headerRecorder) Write(p []byte) (int, error) { return h.body.Write(p) }
func (h *headerRecorder) WriteHeader(status int)      { h.status = status }
