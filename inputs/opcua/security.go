package opcua

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/tagpipe/tagpipe/config"
)

// Security policies by config name, strongest last. Basic128Rsa15 and Basic256 are deprecated
// (SHA-1, PKCS#1 v1.5): they are used only when named, never by "auto".
var policyNames = []string{"None", "Basic128Rsa15", "Basic256", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}

var deprecatedPolicies = map[string]bool{"Basic128Rsa15": true, "Basic256": true}

func policyRank(uri string) int { return indexOf(policyNames, shortPolicy(uri)) }

func shortPolicy(uri string) string { return strings.TrimPrefix(uri, ua.SecurityPolicyURIPrefix) }

func shortMode(m ua.MessageSecurityMode) string {
	switch m {
	case ua.MessageSecurityModeNone:
		return "None"
	case ua.MessageSecurityModeSign:
		return "Sign"
	case ua.MessageSecurityModeSignAndEncrypt:
		return "SignAndEncrypt"
	}
	return "Invalid"
}

func tokenName(t ua.UserTokenType) string {
	switch t {
	case ua.UserTokenTypeAnonymous:
		return "Anonymous"
	case ua.UserTokenTypeUserName:
		return "UserName"
	case ua.UserTokenTypeCertificate:
		return "Certificate"
	}
	return "IssuedToken"
}

func (o *OPCUA) tokenType() ua.UserTokenType {
	switch o.AuthMethod {
	case "UserName":
		return ua.UserTokenTypeUserName
	case "Certificate":
		return ua.UserTokenTypeCertificate
	}
	return ua.UserTokenTypeAnonymous
}

// checkSecurity validates the security keys (Init).
func (o *OPCUA) checkSecurity() error {
	p, m := o.SecurityPolicy, o.SecurityMode
	if p == "None" && (m == "Sign" || m == "SignAndEncrypt") {
		return config.KeyErrorf("security_mode", "%s needs a security_policy other than None", m)
	}
	if m == "None" && p != "None" && p != "auto" {
		return config.KeyErrorf("security_policy", "%s needs security_mode Sign or SignAndEncrypt", p)
	}
	if o.AuthMethod == "UserName" && o.Username == "" {
		return config.KeyErrorf("username", "auth_method = \"UserName\" needs a username")
	}
	if o.AuthMethod != "UserName" && (o.Username != "" || o.Password != "") {
		return config.KeyErrorf("auth_method", "username/password are set but auth_method is %q: set auth_method = \"UserName\"", o.AuthMethod)
	}
	if (o.Certificate == "") != (o.PrivateKey == "") {
		return config.KeyErrorf("certificate", "give certificate and private_key together (or neither: they are then made in the state directory)")
	}
	if o.ServerFingerprint != "" {
		if _, _, err := parseFingerprint(o.ServerFingerprint); err != nil {
			return config.KeyErrorf("server_fingerprint", "%v", err)
		}
	}
	trusts := 0
	for _, set := range []bool{o.TrustedCertificates != "", o.ServerFingerprint != "", o.InsecureSkipVerify} {
		if set {
			trusts++
		}
	}
	if trusts > 1 {
		return config.KeyErrorf("insecure_skip_verify", "choose one of trusted_certificates, server_fingerprint and insecure_skip_verify")
	}
	if o.needsTrust() && trusts == 0 {
		return config.KeyErrorf("security_policy", "security_policy %q with auth_method %q sends secrets to the server: "+
			"say how to check its certificate with trusted_certificates = \"DIR\" or server_fingerprint = \"sha256:...\" "+
			"(or insecure_skip_verify = true, for tests only)", p, o.AuthMethod)
	}
	if o.ApplicationURI != "" {
		if u, err := url.Parse(o.ApplicationURI); err != nil || u.Scheme == "" {
			return config.KeyErrorf("application_uri", "%q is not a URI (e.g. \"urn:plant:tagpipe\")", o.ApplicationURI)
		}
	}
	return nil
}

// needsTrust says whether the server's certificate must be checked: whenever the channel is
// secured, or a password or a certificate signature goes to the server.
func (o *OPCUA) needsTrust() bool {
	return o.SecurityPolicy != "None" || o.AuthMethod != "Anonymous"
}

// selectEndpoint picks the endpoint matching the config: policy and mode as given (auto: the
// best the server offers, deprecated policies excluded) and offering the identity token.
// Ties go to the higher security level, then the stronger mode and policy.
func (o *OPCUA) selectEndpoint(eps []*ua.EndpointDescription) (*ua.EndpointDescription, error) {
	want := o.tokenType()
	var match []*ua.EndpointDescription
	for _, ep := range eps {
		p := shortPolicy(ep.SecurityPolicyURI)
		switch {
		case o.SecurityPolicy == "auto" && deprecatedPolicies[p]:
			continue
		case o.SecurityPolicy != "auto" && p != o.SecurityPolicy:
			continue
		case o.SecurityMode != "auto" && shortMode(ep.SecurityMode) != o.SecurityMode:
			continue
		case policyRank(ep.SecurityPolicyURI) < 0:
			continue // a policy gopcua does not implement
		}
		if offersToken(ep, want) {
			match = append(match, ep)
		}
	}
	if len(match) == 0 {
		return nil, fmt.Errorf("no endpoint of %s matches security_policy = %q, security_mode = %q, auth_method = %q; the server offers: %s",
			o.Endpoint, o.SecurityPolicy, o.SecurityMode, o.AuthMethod, describeEndpoints(eps))
	}
	sort.SliceStable(match, func(i, j int) bool {
		a, b := match[i], match[j]
		if a.SecurityLevel != b.SecurityLevel {
			return a.SecurityLevel > b.SecurityLevel
		}
		if a.SecurityMode != b.SecurityMode {
			return a.SecurityMode > b.SecurityMode
		}
		return policyRank(a.SecurityPolicyURI) > policyRank(b.SecurityPolicyURI)
	})
	return match[0], nil
}

func offersToken(ep *ua.EndpointDescription, t ua.UserTokenType) bool {
	for _, tok := range ep.UserIdentityTokens {
		if tok.TokenType == t {
			return true
		}
	}
	return false
}

func describeEndpoints(eps []*ua.EndpointDescription) string {
	if len(eps) == 0 {
		return "no endpoints"
	}
	parts := make([]string, 0, len(eps))
	for _, ep := range eps {
		toks := make([]string, 0, len(ep.UserIdentityTokens))
		for _, t := range ep.UserIdentityTokens {
			toks = append(toks, tokenName(t.TokenType))
		}
		parts = append(parts, fmt.Sprintf("%s/%s (%s)", shortPolicy(ep.SecurityPolicyURI), shortMode(ep.SecurityMode), strings.Join(toks, ", ")))
	}
	return strings.Join(parts, "; ")
}

// errUntrusted says the server's certificate is not trusted by the config.
type errUntrusted struct {
	fingerprint string
	subject     string
	notAfter    time.Time
	why         string
}

func (e *errUntrusted) Error() string {
	return fmt.Sprintf("server certificate %s (%s, valid until %s) is not trusted: %s",
		e.fingerprint, e.subject, e.notAfter.Format("2006-01-02"), e.why)
}

// verifyServer checks the server's certificate (DER, possibly followed by its chain) against
// server_fingerprint or the certificates in trusted_certificates (read on every connect, so a
// certificate put there takes effect at the next attempt). A certificate in the folder is
// trusted as it is (a pinned self-signed server certificate, as plants use them); a CA there
// trusts the certificates it signed.
func (o *OPCUA) verifyServer(der []byte) error {
	if o.InsecureSkipVerify || !o.needsTrust() {
		return nil
	}
	certs, err := x509.ParseCertificates(der)
	if err != nil || len(certs) == 0 {
		return fmt.Errorf("server certificate cannot be parsed: %v", err)
	}
	leaf := certs[0]
	sum := sha256.Sum256(leaf.Raw)
	fp := "sha256:" + hex.EncodeToString(sum[:])
	untrusted := func(why string) error {
		return &errUntrusted{fingerprint: fp, subject: leaf.Subject.String(), notAfter: leaf.NotAfter, why: why}
	}
	if o.ServerFingerprint != "" {
		algo, want, _ := parseFingerprint(o.ServerFingerprint)
		got := sum[:]
		if algo == "sha1" {
			s1 := sha1.Sum(leaf.Raw)
			got = s1[:]
		}
		if !bytes.Equal(got, want) {
			return untrusted("server_fingerprint is " + o.ServerFingerprint)
		}
		return nil
	}
	trusted, err := loadCertDir(o.TrustedCertificates)
	if err != nil {
		return fmt.Errorf("trusted_certificates: %w", err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range trusted {
		if bytes.Equal(c.Raw, leaf.Raw) {
			return nil
		}
		roots.AddCert(c)
	}
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return untrusted(fmt.Sprintf("neither it nor its issuer is in %s (%v); put it there or set server_fingerprint = %q",
			o.TrustedCertificates, err, fp))
	}
	return nil
}

// parseFingerprint reads "sha256:HEX" or "sha1:HEX" (colons between bytes allowed).
func parseFingerprint(s string) (algo string, sum []byte, err error) {
	algo, h, ok := strings.Cut(s, ":")
	algo = strings.ToLower(algo)
	if !ok || (algo != "sha256" && algo != "sha1") {
		return "", nil, fmt.Errorf("%q: write it as \"sha256:<64 hex digits>\" (or \"sha1:<40 hex digits>\", the OPC UA thumbprint)", s)
	}
	sum, err = hex.DecodeString(strings.ReplaceAll(h, ":", ""))
	if err != nil || (algo == "sha256" && len(sum) != 32) || (algo == "sha1" && len(sum) != 20) {
		return "", nil, fmt.Errorf("%q: not a %s fingerprint", s, algo)
	}
	return algo, sum, nil
}

// loadCertDir reads every certificate (PEM or DER) in dir.
func loadCertDir(dir string) ([]*x509.Certificate, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		certs, err := parseCerts(b)
		if err != nil {
			continue // not a certificate (a README, a CRL): ignored
		}
		out = append(out, certs...)
	}
	return out, nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	return x509.ParseCertificates(b)
}

// clientCert is the client's application instance certificate and key.
type clientCert struct {
	der  []byte
	key  *rsa.PrivateKey
	path string
}

// certMu serializes making certificates: several inputs may share the state directory and
// start at once; only one may create the files.
var certMu sync.Mutex

// loadClientCert loads the client certificate and key, or makes them (RSA 2048, self-signed,
// 5 years) when neither file exists, so that the next start uses the same identity — a server
// that was told to trust it keeps trusting it.
func (o *OPCUA) loadClientCert() (*clientCert, bool, error) {
	certPath, keyPath := o.Certificate, o.PrivateKey
	if certPath == "" {
		certPath = filepath.Join(o.stateDir(), "cert.pem")
		keyPath = filepath.Join(o.stateDir(), "key.pem")
	}
	certMu.Lock()
	defer certMu.Unlock()
	_, errC := os.Stat(certPath)
	_, errK := os.Stat(keyPath)
	switch {
	case errC == nil && errK == nil:
		c, err := readClientCert(certPath, keyPath)
		return c, false, err
	case errors.Is(errC, os.ErrNotExist) && errors.Is(errK, os.ErrNotExist):
		c, err := o.makeClientCert(certPath, keyPath)
		return c, true, err
	case errC == nil:
		return nil, false, fmt.Errorf("certificate %s exists but private key %s does not: give both or remove the certificate", certPath, keyPath)
	case errK == nil:
		return nil, false, fmt.Errorf("private key %s exists but certificate %s does not: give both or remove the key", keyPath, certPath)
	}
	return nil, false, fmt.Errorf("certificate %s / private key %s: %v %v", certPath, keyPath, errC, errK)
}

func readClientCert(certPath, keyPath string) (*clientCert, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(cb)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("certificate %s: not a PEM or DER certificate (%v)", certPath, err)
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(kb)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", keyPath, err)
	}
	pub, ok := certs[0].PublicKey.(*rsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("private key %s does not belong to certificate %s", keyPath, certPath)
	}
	return &clientCert{der: certs[0].Raw, key: key, path: certPath}, nil
}

func parseKey(b []byte) (*rsa.PrivateKey, error) {
	der := b
	if blk, _ := pem.Decode(b); blk != nil {
		der = blk.Bytes
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("not an RSA private key in PEM or DER (PKCS#1 or PKCS#8)")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("OPC UA needs an RSA key")
	}
	return rk, nil
}

func (o *OPCUA) applicationURI() string {
	if o.ApplicationURI != "" {
		return o.ApplicationURI
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return "urn:tagpipe:" + host
}

func (o *OPCUA) makeClientCert(certPath, keyPath string) (*clientCert, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	uri, err := url.Parse(o.applicationURI())
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	dns := []string{"localhost"}
	if host != "" && host != "localhost" {
		dns = append([]string{host}, dns...)
	}
	now := time.Now()
	tmpl := x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "tagpipe", Organization: []string{"tagpipe"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(5, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	for _, dir := range []string{filepath.Dir(certPath), filepath.Dir(keyPath)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("state directory for the client certificate: %w (set state_directory, or certificate and private_key)", err)
		}
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		os.Remove(keyPath)
		return nil, err
	}
	return &clientCert{der: der, key: key, path: certPath}, nil
}

// writeAtomic writes a file under a temporary name and renames it, so that a crash leaves
// either no file or a whole one.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func certFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}
