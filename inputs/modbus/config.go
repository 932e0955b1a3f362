package modbus

import (
	"cmp"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tagpipe/tagpipe/config"
	"github.com/tagpipe/tagpipe/internal/resilience"
	"github.com/tagpipe/tagpipe/models"
)

// Options are the settings a device may have. At the top of [[inputs.modbus]] they are the
// defaults of every device; in a [[inputs.modbus.profile]] they are the defaults of the devices
// of that profile; in a [[inputs.modbus.device]] they are that device's. A nil pointer (an empty
// mode) means "not set here".
type Options struct {
	// TransmissionMode: auto (by the controller's scheme: tcp:// and tls:// speak Modbus TCP,
	// file:// RTU), tcp, rtuovertcp, asciiovertcp, rtu, ascii.
	TransmissionMode string `toml:"transmission_mode"`

	// Adaptive timeout: clamp(timeout_min, timeout_max, EWMA(round trips)·timeout_factor +
	// jitter), with the EWMA weighing the newest round trip rtt_alpha. TimeoutMax is also the
	// timeout of connecting and of the first request; Timeout is its older name.
	Timeout       *config.Duration `toml:"timeout"`
	TimeoutMax    *config.Duration `toml:"timeout_max"`
	TimeoutMin    *config.Duration `toml:"timeout_min"`
	TimeoutFactor *float64         `toml:"timeout_factor"`
	TimeoutJitter *config.Duration `toml:"timeout_jitter"`
	RTTAlpha      *float64         `toml:"rtt_alpha"`

	// Retries of a request that timed out or came back garbled: the first at once, then
	// RetryWait, growing by RetryMultiplier up to RetryWaitMax, each ±RetryJitter; never past
	// the device's next poll.
	Retries         *int             `toml:"retries"`
	RetryWait       *config.Duration `toml:"retry_wait"`
	RetryWaitMax    *config.Duration `toml:"retry_wait_max"`
	RetryMultiplier *float64         `toml:"retry_multiplier"`
	RetryJitter     *float64         `toml:"retry_jitter"`

	// The connection (the same for every device on one controller): TCP keep-alive, closing it
	// when it would stay unused longer than IdleTimeout, reconnect backoff.
	KeepAlive    *config.Duration `toml:"tcp_keep_alive"`
	IdleTimeout  *config.Duration `toml:"idle_timeout"`
	ReconnectMin *config.Duration `toml:"reconnect_min"`
	ReconnectMax *config.Duration `toml:"reconnect_max"`

	// Token buckets: requests per second and burst on one connection (a gateway, a serial
	// line) and of one device; 0: no cap.
	MaxRequestsPerSecond    *float64 `toml:"max_requests_per_second"`
	MaxRequestsBurst        *int     `toml:"max_requests_burst"`
	DeviceRequestsPerSecond *float64 `toml:"device_requests_per_second"`
	DeviceRequestsBurst     *int     `toml:"device_requests_burst"`

	// Circuit breaker of each device on each controller: it opens after BreakerFailures polls
	// in a row with no answer, or when BreakerFailureRate of at least BreakerMinRequests polls
	// in BreakerWindow got none; after BreakerCoolDown, BreakerProbes polls probe the device.
	BreakerFailures    *int             `toml:"breaker_failures"`
	BreakerFailureRate *float64         `toml:"breaker_failure_rate"`
	BreakerWindow      *config.Duration `toml:"breaker_window"`
	BreakerMinRequests *int             `toml:"breaker_min_requests"`
	BreakerCoolDown    *config.Duration `toml:"breaker_cool_down"`
	BreakerProbes      *int             `toml:"breaker_probes"`

	// Degrading: split a read that keeps failing to isolate the bad range; report the last good
	// value of a field that failed, tagged quality=stale, for at most StaleAfter.
	SplitFailingReads *bool            `toml:"split_failing_reads"`
	StaleAfter        *config.Duration `toml:"stale_after"`
	// HealthMetric: a modbus_health metric per device and poll.
	HealthMetric *bool `toml:"health_metric"`

	// MaxGap is how many unread registers (bits) one request may span between two fields.
	MaxGap              *int `toml:"max_gap"`
	MaxRequestRegisters *int `toml:"max_request_registers"`
	MaxRequestBits      *int `toml:"max_request_bits"`
	// Device quirks.
	PauseAfterConnect    *config.Duration `toml:"pause_after_connect"`
	PauseBetweenRequests *config.Duration `toml:"pause_between_requests"`
	CloseAfterGather     *bool            `toml:"close_connection_after_gather"`
	OneRequestPerField   *bool            `toml:"one_request_per_field"`
	ReadCoilsFromZero    *bool            `toml:"read_coils_starting_at_zero"`
	BusyRetries          *int             `toml:"busy_retries"`
	BusyRetriesWait      *config.Duration `toml:"busy_retries_wait"`
}

// Profile is a register map shared by devices.
type Profile struct {
	Name        string            `toml:"name"`
	Measurement string            `toml:"measurement"`
	ByteOrder   string            `toml:"byte_order"` // default of its fields
	Tags        map[string]string `toml:"tags"`
	Fields      []Field           `toml:"field"`
	Options                       // defaults of its devices
}

// Field is one value read from a device.
type Field struct {
	Name        string            `toml:"name"`
	Register    string            `toml:"register"`
	Address     *int              `toml:"address"`
	DataType    string            `toml:"data_type"`
	ByteOrder   string            `toml:"byte_order"`
	Length      int               `toml:"length"`   // registers: STRING (required), FIXED/UFIXED (1, 2 or 4)
	Decimals    int               `toml:"decimals"` // FIXED/UFIXED: implied decimal places
	Bit         *int              `toml:"bit"`      // BIT of a holding or input register: 0..15
	Scale       *float64          `toml:"scale"`
	Offset      float64           `toml:"offset"`
	Output      string            `toml:"output"` // native, float, int, uint
	Measurement string            `toml:"measurement"`
	Tags        map[string]string `toml:"tags"`
}

// Device is one unit to poll.
type Device struct {
	Name       string `toml:"name"`
	Controller string `toml:"controller"`
	// BackupControllers are polled in order when the controller's breaker is open.
	BackupControllers []string          `toml:"backup_controllers"`
	SlaveID           *int              `toml:"slave_id"`
	Profile           string            `toml:"profile"`
	Tags              map[string]string `toml:"tags"`
	Options
}

// RS485 sets the RS-485 mode of a serial line (Linux only).
type RS485 struct {
	DelayRTSBeforeSend config.Duration `toml:"delay_rts_before_send"`
	DelayRTSAfterSend  config.Duration `toml:"delay_rts_after_send"`
	RTSHighDuringSend  bool            `toml:"rts_high_during_send"`
	RTSHighAfterSend   bool            `toml:"rts_high_after_send"`
	RxDuringTx         bool            `toml:"rx_during_tx"`
}

// Built-in defaults of Options.
const (
	defaultTimeout      = 2 * time.Second
	defaultTimeoutMin   = 50 * time.Millisecond
	defaultFactor       = 4
	defaultJitter       = 10 * time.Millisecond
	defaultAlpha        = 0.2
	defaultRetries      = 3
	defaultRetryWait    = 100 * time.Millisecond
	defaultRetryWaitMax = 900 * time.Millisecond
	defaultRetryMult    = 3
	defaultRetryJitter  = 0.2
	defaultKeepAlive    = 15 * time.Second
	defaultIdleTimeout  = time.Minute
	defaultReconnectMin = 100 * time.Millisecond
	defaultBusyWait     = 100 * time.Millisecond
	defaultMeasure      = "modbus"
	defaultBaudRate     = 19200
	defaultCoolDown     = 30 * time.Second
	defaultFailures     = 5
	defaultWindow       = time.Minute
	defaultMinRequests  = 10
	// splitAfter is how many polls in a row a read must time out (while the device answers
	// other reads) or get exception 4 before it is split.
	splitAfter = 2
)

// deviceOptions are a device's Options resolved against the profile's, the plugin's and the
// built-in defaults. Devices with the same options share one (Init interns them): at 10,000
// devices a copy each was 3.7 MB.
type deviceOptions struct {
	timeout          resilience.TimeoutConfig
	retry            resilience.RetryConfig
	line             lineOptions
	deviceRate       float64
	deviceBurst      int
	breaker          breakerOptions
	splitReads       bool
	staleAfter       time.Duration
	health           bool
	pauseAfterConn   time.Duration
	pauseBetween     time.Duration
	closeAfterGather bool
	busyRetries      int
	busyWait         time.Duration
	plan             planOptions
}

// breakerOptions are resilience.BreakerConfig without its functions (which newDevice adds), so
// that deviceOptions can be compared.
type breakerOptions struct {
	failures    int
	rate        float64
	minRequests int
	window      time.Duration
	coolDown    time.Duration
	probes      int
}

func (b breakerOptions) config() resilience.BreakerConfig {
	return resilience.BreakerConfig{Failures: b.failures, FailureRate: b.rate, MinRequests: b.minRequests,
		Window: b.window, CoolDown: b.coolDown, Probes: b.probes}
}

// lineOptions are the settings of one connection: every device on a controller must agree.
type lineOptions struct {
	keepAlive    time.Duration
	idleTimeout  time.Duration
	reconnectMin time.Duration
	reconnectMax time.Duration
	rate         float64
	burst        int
}

// target is where a device is reached.
type target struct {
	scheme  string // tcp, tls, file
	addr    string // host:port, or the serial device
	framing framing
}

func (t target) String() string { return t.scheme + "://" + t.addr }

// profile is a Profile compiled: fields ready to decode, grouped into metrics.
type profile struct {
	name    string
	fields  []fieldSpec
	groups  []group
	strings int // STRING fields (each device caches their last value)
}

// group is the fields of one metric: same measurement, same field tags.
type group struct {
	measurement string
	tags        []models.Tag // profile and field tags
	fields      int
}

// deviceSpec is a Device compiled. It is read-only after Init.
type deviceSpec struct {
	index     int
	name      string
	unit      byte
	prof      *profile
	plan      []request      // shared with devices of the same profile and plan options
	tags      [][]models.Tag // per group: sorted, with the device tag; handed to every metric
	staleTags [][]models.Tag // the same with quality=stale (stale_after only)
	target    target         // its controller
	backups   []target       // backup_controllers
	opts      *deviceOptions // shared by devices with the same options
}

func intOr(p *int, def int) int {
	if p != nil {
		return *p
	}
	return def
}

func durOr(p *config.Duration, def time.Duration) time.Duration {
	if p != nil {
		return time.Duration(*p)
	}
	return def
}

func boolOr(p *bool, def bool) bool {
	if p != nil {
		return *p
	}
	return def
}

func keyOf(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// check validates the values set in o; prefix is "" at the top, "profile[N]" or "device[N]".
func (o *Options) check(prefix string) error {
	key := func(k string) string { return keyOf(prefix, k) }
	if o.TransmissionMode != "" {
		if _, ok := modes[strings.ToLower(o.TransmissionMode)]; !ok {
			return config.KeyErrorf(key("transmission_mode"), "%q: want auto, tcp, rtuovertcp, asciiovertcp, rtu or ascii", o.TransmissionMode)
		}
	}
	if o.Timeout != nil && o.TimeoutMax != nil {
		return config.KeyErrorf(key("timeout"), "timeout is the older name of timeout_max: set one of them")
	}
	// Why each bound: the protocol caps a read at 125 registers and 2000 bits; a gap wider than
	// a whole request cannot be read in one; retries beyond 10 only delay the other devices of a
	// gateway; a breaker that needs more than 1000 failures never protects anything.
	for _, c := range []struct {
		key      string
		p        *int
		min, max int
	}{
		{"retries", o.Retries, 0, 10},
		{"max_gap", o.MaxGap, 0, maxBits - 1},
		{"max_request_registers", o.MaxRequestRegisters, 1, maxRegisters},
		{"max_request_bits", o.MaxRequestBits, 1, maxBits},
		{"busy_retries", o.BusyRetries, 0, 100},
		{"breaker_failures", o.BreakerFailures, 0, 1000},
		{"breaker_min_requests", o.BreakerMinRequests, 1, 100000},
		{"breaker_probes", o.BreakerProbes, 1, 100},
		{"max_requests_burst", o.MaxRequestsBurst, 1, 10000},
		{"device_requests_burst", o.DeviceRequestsBurst, 1, 10000},
	} {
		if c.p != nil && (*c.p < c.min || *c.p > c.max) {
			return config.KeyErrorf(key(c.key), "%d: must be %d..%d", *c.p, c.min, c.max)
		}
	}
	for _, c := range []struct {
		key      string
		p        *float64
		min, max float64
		what     string
	}{
		{"timeout_factor", o.TimeoutFactor, 1, 100, "1 (the average round trip) or more"},
		{"rtt_alpha", o.RTTAlpha, 0.001, 1, "more than 0 and at most 1: the weight of the newest round trip"},
		{"retry_multiplier", o.RetryMultiplier, 1, 100, "1 (equal waits) or more"},
		{"retry_jitter", o.RetryJitter, 0, 1, "0..1"},
		{"max_requests_per_second", o.MaxRequestsPerSecond, 0, 1e6, "0 (no cap) or more"},
		{"device_requests_per_second", o.DeviceRequestsPerSecond, 0, 1e6, "0 (no cap) or more"},
		{"breaker_failure_rate", o.BreakerFailureRate, 0, 1, "0 (off) .. 1 (every poll failed)"},
	} {
		if c.p != nil && (math.IsNaN(*c.p) || *c.p < c.min || *c.p > c.max) {
			return config.KeyErrorf(key(c.key), "%v: must be %s", *c.p, c.what)
		}
	}
	for _, c := range []struct {
		key string
		p   *config.Duration
		min time.Duration
	}{
		{"timeout", o.Timeout, time.Millisecond},
		{"timeout_max", o.TimeoutMax, time.Millisecond},
		{"timeout_min", o.TimeoutMin, time.Millisecond},
		{"breaker_cool_down", o.BreakerCoolDown, time.Millisecond},
		{"breaker_window", o.BreakerWindow, 10 * time.Millisecond},
		{"reconnect_min", o.ReconnectMin, time.Millisecond},
		{"reconnect_max", o.ReconnectMax, time.Millisecond},
	} {
		if c.p != nil && time.Duration(*c.p) < c.min {
			return config.KeyErrorf(key(c.key), "%s: must be at least %s", time.Duration(*c.p), c.min)
		}
	}
	return nil
}

// levels are the Options that apply to one device, most specific first, with the key prefix of
// each (for messages).
type levels struct {
	opts     [3]*Options
	prefixes [3]string
}

// pick returns the most specific value of an option and the key that set it ("" when the
// default applies).
func pick[T any](lv *levels, name string, get func(*Options) *T, def T) (T, string) {
	for i, o := range lv.opts {
		if p := get(o); p != nil {
			return *p, keyOf(lv.prefixes[i], name)
		}
	}
	return def, ""
}

func dur(p *config.Duration) *time.Duration { return (*time.Duration)(p) }

// resolve merges the device's options over its profile's, the plugin's and the built-in
// defaults.
func (m *Modbus) resolve(d *Device, prefix string, prof *Profile, profPrefix string) (o deviceOptions, t0 target, backups []target, err error) {
	lv := &levels{opts: [3]*Options{&d.Options, &prof.Options, &m.Options}, prefixes: [3]string{prefix, profPrefix, ""}}
	i := func(name string, get func(*Options) *int, def int) int { v, _ := pick(lv, name, get, def); return v }
	f := func(name string, get func(*Options) *float64, def float64) float64 {
		v, _ := pick(lv, name, get, def)
		return v
	}
	b := func(name string, get func(*Options) *bool, def bool) bool { v, _ := pick(lv, name, get, def); return v }
	t := func(name string, get func(*Options) *config.Duration, def time.Duration) time.Duration {
		v, _ := pick(lv, name, func(o *Options) *time.Duration { return dur(get(o)) }, def)
		return v
	}
	// timeout_max, or its older name timeout, at the most specific level that sets either
	tmax, tmaxKey := defaultTimeout, ""
	for k, o := range lv.opts {
		if p := cmpOr(o.TimeoutMax, o.Timeout); p != nil {
			tmax, tmaxKey = time.Duration(*p), keyOf(lv.prefixes[k], "timeout_max")
			break
		}
	}
	tmin, tminKey := pick(lv, "timeout_min", func(o *Options) *time.Duration { return dur(o.TimeoutMin) }, min(defaultTimeoutMin, tmax))
	if tmin > tmax {
		key := cmp.Or(tminKey, tmaxKey)
		return o, t0, nil, config.KeyErrorf(key, "timeout_min %s is more than timeout_max %s (device %q)", tmin, tmax, d.Name)
	}
	coolDown := t("breaker_cool_down", func(o *Options) *config.Duration { return o.BreakerCoolDown }, defaultCoolDown)
	rmin := t("reconnect_min", func(o *Options) *config.Duration { return o.ReconnectMin }, defaultReconnectMin)
	// By default reconnects back off to at most half the breaker's cool-down, so that the
	// probe of a half-open breaker always dials instead of failing on the backoff.
	rmax, rmaxKey := pick(lv, "reconnect_max", func(o *Options) *time.Duration { return dur(o.ReconnectMax) },
		max(rmin, min(30*time.Second, coolDown/2)))
	if rmax < rmin {
		return o, t0, nil, config.KeyErrorf(rmaxKey, "%s is less than reconnect_min %s (device %q)", rmax, rmin, d.Name)
	}
	wait := t("retry_wait", func(o *Options) *config.Duration { return o.RetryWait }, defaultRetryWait)
	waitMax, waitMaxKey := pick(lv, "retry_wait_max", func(o *Options) *time.Duration { return dur(o.RetryWaitMax) }, max(wait, defaultRetryWaitMax))
	if waitMax < wait {
		return o, t0, nil, config.KeyErrorf(waitMaxKey, "%s is less than retry_wait %s (device %q)", waitMax, wait, d.Name)
	}
	failures := i("breaker_failures", func(o *Options) *int { return o.BreakerFailures }, defaultFailures)
	if failures == 0 {
		failures = defaultFailures // 0 has always meant the default
	}
	o = deviceOptions{
		timeout: resilience.TimeoutConfig{
			Max:    tmax,
			Min:    tmin,
			Factor: f("timeout_factor", func(o *Options) *float64 { return o.TimeoutFactor }, defaultFactor),
			Jitter: t("timeout_jitter", func(o *Options) *config.Duration { return o.TimeoutJitter }, defaultJitter),
			Alpha:  f("rtt_alpha", func(o *Options) *float64 { return o.RTTAlpha }, defaultAlpha),
		},
		retry: resilience.RetryConfig{
			Retries:    i("retries", func(o *Options) *int { return o.Retries }, defaultRetries),
			Initial:    wait,
			Max:        waitMax,
			Multiplier: f("retry_multiplier", func(o *Options) *float64 { return o.RetryMultiplier }, defaultRetryMult),
			Jitter:     f("retry_jitter", func(o *Options) *float64 { return o.RetryJitter }, defaultRetryJitter),
		},
		line: lineOptions{
			keepAlive:    t("tcp_keep_alive", func(o *Options) *config.Duration { return o.KeepAlive }, defaultKeepAlive),
			idleTimeout:  t("idle_timeout", func(o *Options) *config.Duration { return o.IdleTimeout }, defaultIdleTimeout),
			reconnectMin: rmin,
			reconnectMax: rmax,
			rate:         f("max_requests_per_second", func(o *Options) *float64 { return o.MaxRequestsPerSecond }, 0),
			burst:        i("max_requests_burst", func(o *Options) *int { return o.MaxRequestsBurst }, 1),
		},
		deviceRate:  f("device_requests_per_second", func(o *Options) *float64 { return o.DeviceRequestsPerSecond }, 0),
		deviceBurst: i("device_requests_burst", func(o *Options) *int { return o.DeviceRequestsBurst }, 1),
		breaker: breakerOptions{
			failures:    failures,
			rate:        f("breaker_failure_rate", func(o *Options) *float64 { return o.BreakerFailureRate }, 0),
			minRequests: i("breaker_min_requests", func(o *Options) *int { return o.BreakerMinRequests }, defaultMinRequests),
			window:      t("breaker_window", func(o *Options) *config.Duration { return o.BreakerWindow }, defaultWindow),
			coolDown:    coolDown,
			probes:      i("breaker_probes", func(o *Options) *int { return o.BreakerProbes }, 1),
		},
		splitReads:       b("split_failing_reads", func(o *Options) *bool { return o.SplitFailingReads }, true),
		staleAfter:       t("stale_after", func(o *Options) *config.Duration { return o.StaleAfter }, 0),
		health:           b("health_metric", func(o *Options) *bool { return o.HealthMetric }, true),
		pauseAfterConn:   t("pause_after_connect", func(o *Options) *config.Duration { return o.PauseAfterConnect }, 0),
		pauseBetween:     t("pause_between_requests", func(o *Options) *config.Duration { return o.PauseBetweenRequests }, 0),
		closeAfterGather: b("close_connection_after_gather", func(o *Options) *bool { return o.CloseAfterGather }, false),
		busyRetries:      i("busy_retries", func(o *Options) *int { return o.BusyRetries }, 0),
		busyWait:         t("busy_retries_wait", func(o *Options) *config.Duration { return o.BusyRetriesWait }, defaultBusyWait),
		plan: planOptions{
			maxGap:        i("max_gap", func(o *Options) *int { return o.MaxGap }, 0),
			maxRegisters:  i("max_request_registers", func(o *Options) *int { return o.MaxRequestRegisters }, maxRegisters),
			maxBits:       i("max_request_bits", func(o *Options) *int { return o.MaxRequestBits }, maxBits),
			onePerField:   b("one_request_per_field", func(o *Options) *bool { return o.OneRequestPerField }, false),
			coilsFromZero: b("read_coils_starting_at_zero", func(o *Options) *bool { return o.ReadCoilsFromZero }, false),
		},
	}
	mode := ""
	modeKey := ""
	for k, lo := range lv.opts {
		if lo.TransmissionMode != "" {
			mode, modeKey = strings.ToLower(lo.TransmissionMode), keyOf(lv.prefixes[k], "transmission_mode")
			break
		}
	}
	parse := func(url, key string) (target, error) {
		t, err := parseController(url, mode)
		if err != nil {
			if strings.HasPrefix(err.Error(), "transmission_mode") {
				key = cmp.Or(modeKey, "transmission_mode")
			}
			return t, config.KeyErrorf(key, "%v", err)
		}
		return t, nil
	}
	if t0, err = parse(d.Controller, keyOf(prefix, "controller")); err != nil {
		return o, t0, nil, err
	}
	seen := map[string]bool{t0.String(): true}
	for j, u := range d.BackupControllers {
		key := fmt.Sprintf("%s.backup_controllers[%d]", prefix, j)
		bt, err := parse(u, key)
		if err != nil {
			return o, t0, nil, err
		}
		if seen[bt.String()] {
			return o, t0, nil, config.KeyErrorf(key, "%s is already a controller of device %q", bt, d.Name)
		}
		seen[bt.String()] = true
		backups = append(backups, bt)
	}
	return o, t0, backups, nil
}

func cmpOr[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

// modes maps transmission_mode to a framing; 0 is auto.
var modes = map[string]framing{
	"auto": 0, "tcp": frameMBAP, "rtuovertcp": frameRTU, "rtu-over-tcp": frameRTU,
	"asciiovertcp": frameASCII, "ascii-over-tcp": frameASCII, "rtu": frameRTU, "ascii": frameASCII,
}

func orStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// parseController reads tcp://host[:502], tls://host[:802] or file:///dev/ttyX and checks the
// transmission mode against it.
func parseController(s, mode string) (target, error) {
	if s == "" {
		return target{}, fmt.Errorf("missing: write tcp://HOST:PORT, tls://HOST:PORT or file:///dev/DEVICE")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return target{}, fmt.Errorf("%q: write tcp://HOST:PORT, tls://HOST:PORT or file:///dev/DEVICE", s)
	}
	fr := modes[mode]
	t := target{scheme: strings.ToLower(u.Scheme), framing: fr}
	switch t.scheme {
	case "tcp", "tls":
		if u.Host == "" || u.Path != "" && u.Path != "/" {
			return target{}, fmt.Errorf("%q: want %s://HOST:PORT", s, t.scheme)
		}
		port := u.Port()
		if port == "" {
			port = "502"
			if t.scheme == "tls" {
				port = "802" // Modbus/TCP Security's registered port
			}
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return target{}, fmt.Errorf("%q: port %q is not 1..65535", s, port)
		}
		t.addr = net.JoinHostPort(u.Hostname(), port)
		switch {
		case fr == 0:
			t.framing = frameMBAP
		case mode == "rtu" || mode == "ascii":
			return target{}, fmt.Errorf("transmission_mode %q is for serial lines (file://); over TCP use %sovertcp", mode, mode)
		case t.scheme == "tls" && fr != frameMBAP:
			return target{}, fmt.Errorf("transmission_mode %q: Modbus/TCP Security (tls://) carries Modbus TCP frames only", mode)
		}
	case "file":
		t.addr = u.Path
		if u.Host != "" || t.addr == "" {
			return target{}, fmt.Errorf("%q: want file:///dev/DEVICE (three slashes)", s)
		}
		switch {
		case fr == 0:
			t.framing = frameRTU
		case mode != "rtu" && mode != "ascii":
			return target{}, fmt.Errorf("transmission_mode %q is for TCP; a serial line speaks rtu or ascii", mode)
		}
	default:
		return target{}, fmt.Errorf("%q: scheme %q, want tcp, tls or file", s, u.Scheme)
	}
	return t, nil
}

// compileProfile checks a profile and builds its fields and groups. The warnings name fields
// whose address looks 1-based.
func compileProfile(p *Profile, prefix string) (_ *profile, warnings []error, _ error) {
	if p.Name == "" {
		return nil, nil, config.KeyErrorf(keyOf(prefix, "name"), "missing: devices name their profile")
	}
	if _, err := parseByteOrder(p.ByteOrder, false); err != nil {
		return nil, nil, config.KeyErrorf(keyOf(prefix, "byte_order"), "%v", err)
	}
	if len(p.Fields) == 0 {
		return nil, nil, config.KeyErrorf(keyOf(prefix, "name"), "profile %q has no [[inputs.modbus.profile.field]]", p.Name)
	}
	prof := &profile{name: p.Name}
	groupIdx := map[string]int{}
	names := map[string]int{} // group/field name → field index
	for i := range p.Fields {
		f := &p.Fields[i]
		fp := fmt.Sprintf("%s.field[%d]", prefix, i)
		spec, err := compileField(f, fp, p.ByteOrder, keyOf(prefix, "byte_order"))
		if err != nil {
			return nil, nil, err
		}
		if zero, ok := oneBased(spec.kind, int(spec.address)); ok {
			warnings = append(warnings, config.KeyErrorf(fp+".address", "%d: addresses are 0-based; %s", spec.address, oneBasedHint(spec.kind, int(spec.address), zero)))
		}
		meas := orStr(f.Measurement, orStr(p.Measurement, defaultMeasure))
		tags := models.MergeTags(models.TagsFromMap(f.Tags), nil, models.TagsFromMap(p.Tags))
		key := meas + "\x00" + tagKey(tags)
		g, ok := groupIdx[key]
		if !ok {
			g = len(prof.groups)
			groupIdx[key] = g
			prof.groups = append(prof.groups, group{measurement: meas, tags: tags})
		}
		if j, dup := names[key+"\x00"+f.Name]; dup {
			return nil, nil, config.KeyErrorf(fp+".name", "%q is also field[%d] of the same metric", f.Name, j)
		}
		names[key+"\x00"+f.Name] = i
		spec.group, spec.pos = g, prof.groups[g].fields
		prof.groups[g].fields++
		if spec.typ == typeString {
			spec.strSlot = prof.strings
			prof.strings++
		}
		prof.fields = append(prof.fields, spec)
	}
	if err := checkOverlaps(prof.fields, prefix); err != nil {
		return nil, nil, err
	}
	return prof, warnings, nil
}

func tagKey(tags []models.Tag) string {
	var b strings.Builder
	for _, t := range tags {
		b.WriteString(t.Key + "=" + t.Value + "\x00")
	}
	return b.String()
}

// compileField checks one field; defOrder is the profile's byte order, set by defKey.
func compileField(f *Field, prefix, defOrder, defKey string) (fieldSpec, error) {
	key := func(k string) string { return prefix + "." + k }
	spec := fieldSpec{name: f.Name, scale: 1, divisor: 1}
	if f.Name == "" {
		return spec, config.KeyErrorf(key("name"), "missing")
	}
	kind, ok := parseKind(f.Register)
	if !ok {
		return spec, config.KeyErrorf(key("register"), "%q: want coil, discrete, holding or input", f.Register)
	}
	spec.kind = kind
	if f.Address == nil {
		return spec, config.KeyErrorf(key("name"), "field %q has no address", f.Name)
	}
	dt := strings.ToUpper(f.DataType)
	if dt == "" {
		if !kind.isBits() {
			return spec, config.KeyErrorf(key("data_type"), "missing for %s register: one of %s", article(kind), typeList)
		}
		dt = "BIT"
	}
	typ, ok := typeNames[dt]
	if !ok {
		return spec, config.KeyErrorf(key("data_type"), "%q: want one of %s", f.DataType, typeList)
	}
	spec.typ = typ
	if kind.isBits() && typ != typeBit {
		return spec, config.KeyErrorf(key("data_type"), "%s: a %s holds one bit; its data_type is BIT", dt, kind)
	}
	// Size, length and bit.
	regs := typ.registers()
	switch typ {
	case typeString:
		if f.Length < 1 || f.Length > maxRegisters {
			return spec, config.KeyErrorf(key("length"), "%d: a STRING needs its length in registers, 1..%d", f.Length, maxRegisters)
		}
		regs = f.Length
	case typeFixed, typeUfixed:
		switch f.Length {
		case 0, 1:
			regs = 1
		case 2, 4:
			regs = f.Length
		default:
			return spec, config.KeyErrorf(key("length"), "%d: %s spans 1, 2 or 4 registers", f.Length, dt)
		}
	default:
		if f.Length != 0 {
			return spec, config.KeyErrorf(key("length"), "only STRING, FIXED and UFIXED take a length (%s has %d registers)", dt, regs)
		}
	}
	if typ == typeFixed || typ == typeUfixed {
		if f.Decimals < 0 || f.Decimals > 18 {
			return spec, config.KeyErrorf(key("decimals"), "%d: must be 0..18", f.Decimals)
		}
		spec.divisor = math.Pow10(f.Decimals)
	} else if f.Decimals != 0 {
		return spec, config.KeyErrorf(key("decimals"), "only FIXED and UFIXED have implied decimals")
	}
	switch {
	case typ == typeBit && !kind.isBits():
		if f.Bit == nil || *f.Bit < 0 || *f.Bit > 15 {
			return spec, config.KeyErrorf(key("bit"), "a BIT of %s register needs bit = 0..15", article(kind))
		}
		spec.bit = uint8(*f.Bit)
	case f.Bit != nil:
		return spec, config.KeyErrorf(key("bit"), "only a BIT of a holding or input register has a bit number")
	}
	if kind.isBits() {
		regs = 1
	}
	spec.regs = uint16(regs)
	addr := *f.Address
	if addr < 0 || addr+regs > 65536 {
		hint := ""
		if zero, ok := oneBased(kind, addr); ok {
			hint = "; " + oneBasedHint(kind, addr, zero)
		}
		return spec, config.KeyErrorf(key("address"), "%d: %s %s of %d spans %d..%d; addresses are 0..65535%s", addr, kind, dt, regs, addr, addr+regs-1, hint)
	}
	spec.address = uint16(addr)
	// Byte order: the field's own, or else the profile's. Of the profile's, a field of one
	// register and a STRING (its registers are read in order) take the byte order within a
	// register alone: ABCD and CDAB are AB to them, DCBA and BADC are BA. A value of several
	// registers needs a four-letter order; the profile's AB or BA is an error at the profile.
	wide := regs > 1 && typ != typeString
	var bo byteOrder
	var err error
	if f.ByteOrder != "" {
		if bo, err = parseByteOrder(f.ByteOrder, wide); err != nil {
			return spec, config.KeyErrorf(key("byte_order"), "%v", err)
		}
		if typ == typeString && bo.wordSwap {
			return spec, config.KeyErrorf(key("byte_order"), "%q: a STRING is AB (first character in the high byte) or BA", f.ByteOrder)
		}
	} else {
		if bo, err = parseByteOrder(defOrder, wide); err != nil {
			return spec, config.KeyErrorf(defKey, "%v (field %q is %s: give it a byte_order of its own)", err, f.Name, dt)
		}
		if !wide {
			bo.wordSwap = false
		}
	}
	spec.order = bo
	// Output.
	out, ok := parseOutput(f.Output)
	if !ok {
		return spec, config.KeyErrorf(key("output"), "%q: want native, float, int or uint", f.Output)
	}
	spec.out = out
	if f.Scale != nil {
		if *f.Scale == 0 || math.IsNaN(*f.Scale) || math.IsInf(*f.Scale, 0) {
			return spec, config.KeyErrorf(key("scale"), "%v: a scale must be a finite number other than 0", *f.Scale)
		}
		spec.scale = *f.Scale
	}
	if math.IsNaN(f.Offset) || math.IsInf(f.Offset, 0) {
		return spec, config.KeyErrorf(key("offset"), "%v: must be a finite number", f.Offset)
	}
	spec.offset = f.Offset
	spec.scaled = spec.scale != 1 || spec.offset != 0
	if typ == typeString && (spec.scaled || out != outNative) {
		return spec, config.KeyErrorf(key("output"), "a STRING has no scale, offset or numeric output")
	}
	return spec, nil
}

// oneBased reports whether addr of a table looks like a register number of the 1-based
// convention many device manuals use, and the 0-based address it would stand for: 30001–39999
// (300001–365536) are input registers, 40001–49999 (400001–465536) holding registers and
// 10001–19999 (100001–165536) discrete inputs. Coils (00001–09999) are left alone: their numbers
// cannot be told from addresses. A device may have registers that high (SunSpec maps start at
// holding 40000), so below 65536 this is a warning, not an error.
func oneBased(k regKind, addr int) (zero int, ok bool) {
	var first int
	switch k {
	case kindDiscrete:
		first = 1
	case kindInput:
		first = 3
	case kindHolding:
		first = 4
	default:
		return 0, false
	}
	for _, c := range []struct{ base, last int }{{first*10000 + 1, first*10000 + 9999}, {first*100000 + 1, first*100000 + 65536}} {
		if addr >= c.base && addr <= c.last {
			return addr - c.base, true
		}
	}
	return 0, false
}

// oneBasedHint says what a 1-based address probably means.
func oneBasedHint(k regKind, addr, zero int) string {
	table := map[regKind]string{kindDiscrete: "discrete inputs", kindInput: "input registers", kindHolding: "holding registers"}[k]
	return fmt.Sprintf("%d is probably address %d (the 1-based numbering of %s starts at %d)", addr, zero, table, addr-zero)
}

// partMask is the part of a register a sub-register field reads; 0 for a whole register.
func partMask(f *fieldSpec) uint16 {
	switch f.typ {
	case typeBit:
		return 1 << f.bit
	case typeInt8L, typeUint8L:
		return 0x00FF
	case typeInt8H, typeUint8H:
		return 0xFF00
	}
	return 0
}

// checkOverlaps refuses two fields reading the same register or bit, unless both read
// distinct parts (bits, bytes) of one register.
func checkOverlaps(fields []fieldSpec, prefix string) error {
	idx := make([]int, len(fields))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		fa, fb := &fields[a], &fields[b]
		if fa.kind != fb.kind {
			return int(fa.kind) - int(fb.kind)
		}
		return int(fa.address) - int(fb.address)
	})
	for n, i := range idx {
		a := &fields[i]
		for _, j := range idx[n+1:] {
			b := &fields[j]
			if b.kind != a.kind || int(b.address) >= a.end() {
				break
			}
			ma, mb := partMask(a), partMask(b)
			if a.regs == 1 && b.regs == 1 && !a.kind.isBits() && ma != 0 && mb != 0 && ma&mb == 0 {
				continue
			}
			later, earlier := max(i, j), min(i, j)
			l, e := &fields[later], &fields[earlier]
			return config.KeyErrorf(fmt.Sprintf("%s.field[%d].address", prefix, later),
				"%s %d..%d of %q overlaps %q (%s %d..%d)", l.kind, l.address, l.end()-1, l.name, e.name, e.kind, e.address, e.end()-1)
		}
	}
	return nil
}

// deviceTags builds the tag set of each of the profile's metrics for one device: the group's
// tags, the device's tags over them, and the device tag.
func deviceTags(prof *profile, d *Device) [][]models.Tag {
	own := models.TagsFromMap(d.Tags)
	out := make([][]models.Tag, len(prof.groups))
	for g := range prof.groups {
		tags := models.MergeTags(own, []models.Tag{{Key: "device", Value: d.Name}}, prof.groups[g].tags)
		out[g] = slices.Clip(tags)
	}
	return out
}

// staleTags returns tags with quality=stale added to each set.
func staleTags(tags [][]models.Tag) [][]models.Tag {
	out := make([][]models.Tag, len(tags))
	for g, t := range tags {
		out[g] = slices.Clip(models.MergeTags(t, []models.Tag{{Key: "quality", Value: "stale"}}, nil))
	}
	return out
}

// lineKeys are the connection settings: their keys, their values and whether Options set them.
var lineKeys = []struct {
	key   string
	value func(*lineOptions) any
	set   func(*Options) bool
}{
	{"tcp_keep_alive", func(l *lineOptions) any { return l.keepAlive }, func(o *Options) bool { return o.KeepAlive != nil }},
	{"idle_timeout", func(l *lineOptions) any { return l.idleTimeout }, func(o *Options) bool { return o.IdleTimeout != nil }},
	{"reconnect_min", func(l *lineOptions) any { return l.reconnectMin }, func(o *Options) bool { return o.ReconnectMin != nil }},
	{"reconnect_max", func(l *lineOptions) any { return l.reconnectMax }, func(o *Options) bool { return o.ReconnectMax != nil }},
	{"max_requests_per_second", func(l *lineOptions) any { return l.rate }, func(o *Options) bool { return o.MaxRequestsPerSecond != nil }},
	{"max_requests_burst", func(l *lineOptions) any { return l.burst }, func(o *Options) bool { return o.MaxRequestsBurst != nil }},
}

// lineConflict describes how b (a device's connection settings) differs from a (those of the
// connection's first device), and returns the key to blame: the first differing setting where
// the device or its profile sets it, else fallback.
func lineConflict(a, b *lineOptions, lv *levels, fallback string) (key, diff string) {
	var out []string
	for _, k := range lineKeys {
		x, y := k.value(a), k.value(b)
		if x == y {
			continue
		}
		out = append(out, fmt.Sprintf("%s %v, not %v", k.key, x, y))
		if key == "" {
			for i, o := range lv.opts[:2] {
				if k.set(o) {
					key = keyOf(lv.prefixes[i], k.key)
					break
				}
			}
		}
	}
	return cmp.Or(key, fallback), strings.Join(out, ", ")
}

// article returns "a holding" or "an input".
func article(k regKind) string {
	if k == kindInput {
		return "an input"
	}
	return "a " + k.String()
}
