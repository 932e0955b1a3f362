package all

import _ "github.com/tagpipe/tagpipe/processors/predict" // register processors.predict
